"""RedisQueue: the job API web handlers call. JSON jobs; registered tasks only.

    q = get_email_queue()
    job_id = q.enqueue_job("process_gmail_sync", {"job_id": sync_id}, max_retries=3, user_id=42)
    job = q.get_job_status(job_id)          # Job | None, whichever queue or engine holds it

Enqueue validates in the caller (:mod:`core.queue.job_options`: unknown task, non-JSON or oversized
payload, bad options raise a :class:`~core.errors.JobsError`), then writes through
:func:`core.queue.lifecycle.enqueue`: one script call, one round trip. When Redis is unreachable the
job goes to the in-process threading fallback instead and the id comes back at once. Reads and
operator actions live in :mod:`core.api.jobs` (re-exported here).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.api import batches
from core.api.jobs import (
    cancel_job,
    fetch_jobs,
    get_job,
    must_get,
    retry_job,
    stop_job,
    wait_for,
)
from core.api.tasks import Task
from core.config import QUEUE_NAMES, get_settings
from core.errors import (
    InvalidJobStateError,
    InvalidPayloadError,
    JobsError,
    QueueUnavailableError,
    UnknownQueueError,
    UnknownTaskError,
)
from core.fallback.executor import get_fallback
from core.flow import pause
from core.flow.limits import check_limits
from core.platform import keys, tracing
from core.platform.connection import REDIS_DOWN, get_redis, internal_errors, mark_redis_down, redis_available
from core.queue import groups, lifecycle, task_registry
from core.queue.backoff import InvalidRetryPolicyError, RetryPolicy
from core.queue.hooks import Hooks, check_hooks
from core.queue.job_model import Job, JobStatus
from core.queue.job_options import (
    EnqueueOptions,
    check_expires,
    check_options,
    default_options,
    encode_payload_json,
    is_default,
    new_job_id,
    validate_job_id,
)
from core.queue.rq_compat import parse_time
from core.queue.task_registry import TaskSpec

logger = logging.getLogger(__name__)

class RedisQueue:
    """One named queue (``email``, ``ai`` or ``crm``): register tasks, enqueue, inspect, act."""

    def __init__(self, short_name: str) -> None:
        if short_name not in QUEUE_NAMES:
            raise UnknownQueueError(f"unknown queue {short_name!r}; accepted: {', '.join(QUEUE_NAMES)}")
        self.short_name = short_name

    def __repr__(self) -> str:
        return f"RedisQueue({self.name!r})"

    @property
    def name(self) -> str:
        """The RQ queue name, ``fikiri:email``."""
        return get_settings().full_queue_name(self.short_name)

    def is_connected(self) -> bool:
        """Whether Redis answered recently (cached; never hangs)."""
        return redis_available()

    # --- the task registry ------------------------------------------------------------------
    def register_task(self, name: str, func: Callable[..., Any], max_retries: int | None = None,
                      fallback: bool = True, *, rate_limit: str | None = None, rate_key: str | None = None,
                      concurrency_limit: int | None = None, concurrency_key: str | None = None,
                      concurrency: int | None = None,
                      expires: float | timedelta | datetime | None = None,
                      retry_backoff: tuple[float, float] | None = None,
                      retry_jitter: str | None = None, retry_on: Any = None, dont_retry_on: Any = None,
                      retry_delays: list[float] | None = None, max_stalls: int = 1,
                      interruptible: bool = True, group: str | None = None,
                      group_concurrency: int | None = None) -> TaskSpec:
        """Allow workers to run ``func`` for jobs naming ``name`` on this queue.

        ``fallback=False``: while Redis is down, enqueue raises :class:`QueueUnavailableError`
        (HTTP 503) instead of running the task in a web process (heavy AI work, say).
        ``rate_limit="60/m"`` (per ``rate_key``, a string or a payload template such as
        ``"{user_id}"``) and ``concurrency=N`` (per ``concurrency_key``) are enforced in Redis
        across every worker and host; see :mod:`core.flow.limits`. ``concurrency_limit`` is DESIGN.md's
        name, ``concurrency`` the same option's older one. Registering a name again keeps the
        limits it was declared with (see :func:`core.queue.task_registry.register`).
        ``expires``: the default of every run (see :meth:`enqueue_job`).
        ``max_stalls`` (default 1): attempts lost to a crash (the worker SIGKILLed or OOM-killed, its
        lease expired) go back to waiting without using a retry; the next one after ``max_stalls``
        fails the job as a repeat crash. ``interruptible=False``: a worker's shutdown waits for this
        task past ``JOBS_WORKER_SHUTDOWN_TIMEOUT`` instead of interrupting and requeueing it.

        Retry policy (:mod:`core.queue.backoff`): ``retry_backoff=(base, cap)`` seconds and
        ``retry_jitter="full"`` (default) or ``"none"``, or a fixed schedule ``retry_delays=[60, 120,
        240]`` (then ``max_retries`` defaults to its length); ``retry_on`` / ``dont_retry_on``
        (exception types, subclasses included) choose which failures retry at all. A bad value
        raises :class:`~core.queue.backoff.InvalidRetryPolicyError` (a JobsError and a ValueError).

        ``group="{user_id}"``: jobs are served round-robin across groups (one tenant's backlog no
        longer starves the others), ``group_concurrency=N`` caps one group's running jobs; see
        :mod:`core.queue.groups`."""
        concurrency = concurrency_option(concurrency_limit, concurrency)
        try:
            limits = check_limits(rate_limit, rate_key, concurrency, concurrency_key)
            check_expires(expires)
            group = groups.check_group_template(group)
            group_concurrency = groups.check_group_concurrency(group_concurrency, group)
        except JobsError as exc:
            raise ValueError(f"task {name!r}: {exc.message}") from exc
        try:
            retry = RetryPolicy.declare(retry_backoff, retry_jitter, retry_delays, retry_on, dont_retry_on)
        except InvalidRetryPolicyError as exc:
            raise InvalidRetryPolicyError(f"task {name!r}: {exc.message}") from None
        return task_registry.register(self.short_name, name, func, max_retries, fallback, limits, retry,
                                      expires=expires, max_stalls=max_stalls, interruptible=interruptible,
                                      group=group, group_concurrency=group_concurrency)

    def task(self, max_retries: int | None = None, name: str | None = None, fallback: bool = True, *,
             rate_limit: str | None = None, rate_key: str | None = None, concurrency_limit: int | None = None,
             concurrency_key: str | None = None, concurrency: int | None = None,
             expires: float | timedelta | datetime | None = None,
             retry_backoff: tuple[float, float] | None = None, retry_jitter: str | None = None,
             retry_on: Any = None, dont_retry_on: Any = None, retry_delays: list[float] | None = None,
             max_stalls: int = 1, interruptible: bool = True,
             group: str | None = None, group_concurrency: int | None = None) -> Callable:
        """Decorator: register the function as a task under its own name (or ``name``); the options
        are :meth:`register_task`'s."""
        concurrency = concurrency_option(concurrency_limit, concurrency)
        retry_options = {"retry_backoff": retry_backoff, "retry_jitter": retry_jitter, "retry_on": retry_on,
                         "dont_retry_on": dont_retry_on, "retry_delays": retry_delays, "group": group,
                         "group_concurrency": group_concurrency}

        def decorate(func: Callable[..., Any]) -> Task:
            self.register_task(name or func.__name__, func, max_retries, fallback, rate_limit=rate_limit,
                               rate_key=rate_key, concurrency=concurrency, concurrency_key=concurrency_key,
                               expires=expires, max_stalls=max_stalls, interruptible=interruptible,
                               **retry_options)
            return Task(self, name or func.__name__, func)  # the function, plus .enqueue/.delay

        return decorate

    def registered_tasks(self) -> list[str]:
        return task_registry.names(self.short_name)

    def _spec(self, task_name: Any) -> TaskSpec:
        if not isinstance(task_name, str) or not task_name:
            raise UnknownTaskError(f"task name must be a non-empty string, got {task_name!r}")
        spec = task_registry.get(self.short_name, task_name)
        if spec is None:
            registered = ", ".join(self.registered_tasks()) or "none"
            hint = ""
            for other, names in task_registry.all_tasks().items():
                if other != self.short_name and task_name in names:
                    hint = f" (it is registered on queue {other})"
            raise UnknownTaskError(
                f"unknown task {task_name!r} on queue {self.short_name}{hint}; registered: {registered}"
            )
        return spec

    # --- enqueue -----------------------------------------------------------------------------
    def enqueue_job(
        self,
        task_name: str,
        payload: dict[str, Any] | None = None,
        *,
        max_retries: int | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        priority: str = "normal",
        job_id: str | None = None,
        user_id: str | int | None = None,
        timeout: int | None = None,
        unique_for: int | None = None,
        unique_key: str | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        concurrency_limit: int | None = None,
        concurrency_key: str | None = None,
        concurrency: int | None = None,
        depends_on: str | list[str] | None = None,
        on_dependency_failure: str = "cancel",
        on_success: str | None = None,
        on_failure: str | None = None,
        expires: float | timedelta | datetime | None = None,
        retry_backoff: tuple[float, float] | None = None,
        retry_jitter: str | None = None,
        retry_delays: list[float] | None = None,
        group: str | None = None,
        group_concurrency: int | None = None,
    ) -> str:
        """Queue ``task_name(**payload)`` and return the job id.

        A caller's ``job_id`` is a no-op while that job is pending, delayed, running or retrying;
        once it has ended, the same id starts a new run (the old outcome is replaced).
        ``unique_for=seconds`` allows one such job (same task and payload, or same ``unique_key``)
        per window: a second enqueue inside it returns the first job's id.
        ``priority``: ``high``, ``normal`` or ``low``. ``rate_limit``/``rate_key`` and
        ``concurrency``/``concurrency_key`` override the task's limits for this run.
        ``depends_on``, ``on_dependency_failure``, ``on_success`` and ``on_failure``: see
        :mod:`core.queue.hooks` (they need Redis: with Redis down they answer 503).
        ``expires``: seconds after enqueue (or a timedelta), or a datetime (naive = UTC); a job not
        started by then ends ``expired`` and never runs (default: the task's ``expires``, else none).
        ``retry_backoff``, ``retry_jitter`` and ``retry_delays`` override the task's retry policy
        for this run (a call's schedule replaces the task's; its ``retry_on`` filters stay);
        the job carries the result in its hash (see :mod:`core.queue.backoff`).
        ``group`` and ``group_concurrency`` override the task's (see :mod:`core.queue.groups`).
        """
        concurrency = concurrency_option(concurrency_limit, concurrency)
        hooks = check_hooks(self.short_name, depends_on, on_dependency_failure, on_success, on_failure)
        return self._enqueue_one(task_name, payload, hooks, None, max_retries=max_retries, delay=delay, at=at,
                                 priority=priority, job_id=job_id, user_id=user_id, timeout=timeout,
                                 unique_for=unique_for, unique_key=unique_key, rate_limit=rate_limit,
                                 rate_key=rate_key, concurrency=concurrency, concurrency_key=concurrency_key,
                                 expires=expires, retry_backoff=retry_backoff, retry_jitter=retry_jitter,
                                 retry_delays=retry_delays, group=group, group_concurrency=group_concurrency)

    def check_enqueue(self, task_name: str, payload: dict[str, Any] | None,
                      **option_values: Any) -> tuple[TaskSpec, dict[str, Any], EnqueueOptions, str | None]:
        """Everything an enqueue checks, writing nothing: (task, payload, options, its limits).
        Raises the :class:`~core.errors.JobsError` the enqueue would."""
        spec, kwargs, _text, options, job_limits = self._check_enqueue(task_name, payload, option_values)
        return spec, kwargs, options, job_limits

    def _check_enqueue(self, task_name: str, payload: dict[str, Any] | None, option_values: dict[str, Any],
                       ) -> tuple[TaskSpec, dict[str, Any], str, EnqueueOptions, str | None]:
        """:meth:`check_enqueue`, plus the payload's JSON. A call with no option (nearly every one)
        takes the task's options checked once (:func:`default_options`)."""
        spec = self._spec(task_name)
        kwargs, text = encode_payload_json(payload, get_settings().max_payload_bytes)
        options = default_options(spec) if is_default(option_values) else check_options(spec, **option_values)
        options.group_of(kwargs)  # a group template the payload cannot fill fails here, before anything is written
        return spec, kwargs, text, options, options.limits_field(self.short_name, spec.name, kwargs)  # a bad key fails

    def _enqueue_one(self, task_name: str, payload: dict[str, Any] | None, hooks: Hooks, pass_result: str | None,
                     allow_fallback: bool = True, **option_values: Any) -> str:
        spec, kwargs, text, options, job_limits = self._check_enqueue(task_name, payload, option_values)
        if hooks.depends_on and options.run_at is not None:
            raise InvalidPayloadError("give either depends_on or delay/at: a job with dependencies runs when they end")
        needs_redis = bool(hooks) or not allow_fallback
        try:
            with internal_errors(f"enqueue of {spec.name!r} on queue {self.short_name}"):
                if redis_available():
                    return self._enqueue_redis(spec, [kwargs], options, [job_limits], hooks, pass_result,
                                               texts=[text])[0]
        except REDIS_DOWN as exc:  # internal_errors let only a lost connection through
            mark_redis_down()
            if needs_redis:
                raise QueueUnavailableError("Redis went away; a job with depends_on or callbacks, or a chain's "
                                            "step, needs it; this one was not written, try again") from exc
            logger.warning("enqueue of %s to Redis failed (%s); using the in-process fallback", task_name, exc)
        else:
            if needs_redis:
                raise QueueUnavailableError("Redis is unreachable now, and this job needs it (depends_on, callbacks "
                                            "or a chain); nothing was written, try again in a moment")
        return self._enqueue_fallback(spec, kwargs, options, job_limits)

    def enqueue_many(
        self,
        task_name: str,
        payloads: list[dict[str, Any]],
        *,
        max_retries: int | None = None,
        priority: str = "normal",
        user_id: str | int | None = None,
        timeout: int | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        concurrency_limit: int | None = None,
        concurrency_key: str | None = None,
        concurrency: int | None = None,
        expires: float | timedelta | datetime | None = None,
        retry_backoff: tuple[float, float] | None = None,
        retry_jitter: str | None = None,
        retry_delays: list[float] | None = None,
        group: str | None = None,
        group_concurrency: int | None = None,
    ) -> list[str]:
        """Queue ``task_name`` once per payload in one script call; returns the ids.

        Every payload is validated first, so a bad one rejects the whole batch before anything is
        written. With Redis down the jobs go to the fallback one by one.
        """
        concurrency = concurrency_option(concurrency_limit, concurrency)
        return self._enqueue_many(task_name, payloads, None, max_retries=max_retries, priority=priority,
                                  user_id=user_id, timeout=timeout, rate_limit=rate_limit, rate_key=rate_key,
                                  concurrency=concurrency, concurrency_key=concurrency_key, expires=expires,
                                  retry_backoff=retry_backoff, retry_jitter=retry_jitter, retry_delays=retry_delays,
                                  group=group, group_concurrency=group_concurrency)

    def _enqueue_many(self, task_name: str, payloads: list[dict[str, Any]], batch: dict[str, Any] | None,
                      max_retries: int | None = None, priority: str = "normal", user_id: str | int | None = None,
                      timeout: int | None = None, rate_limit: str | None = None, rate_key: str | None = None,
                      concurrency: int | None = None, concurrency_key: str | None = None,
                      expires: float | timedelta | datetime | None = None, retry_backoff: Any = None,
                      retry_jitter: Any = None, retry_delays: Any = None, group: Any = None,
                      group_concurrency: Any = None) -> list[str]:
        spec = self._spec(task_name)
        limit = get_settings().max_payload_bytes
        pairs = [encode_payload_json(p, limit) for p in payloads]
        encoded, texts = [kwargs for kwargs, _ in pairs], [text for _, text in pairs]
        options = check_options(spec, max_retries=max_retries, priority=priority, user_id=user_id, timeout=timeout,
                                rate_limit=rate_limit, rate_key=rate_key, concurrency=concurrency,
                                concurrency_key=concurrency_key, expires=expires, retry_backoff=retry_backoff,
                                retry_jitter=retry_jitter, retry_delays=retry_delays, group=group,
                                group_concurrency=group_concurrency)
        limit_fields = [options.limits_field(self.short_name, spec.name, kwargs) for kwargs in encoded]
        for kwargs in encoded:
            options.group_of(kwargs)  # every payload fills the group template, before anything is written
        try:
            with internal_errors(f"bulk enqueue of {spec.name!r} on queue {self.short_name}"):
                if redis_available():
                    return self._enqueue_redis(spec, encoded, options, limit_fields, batch=batch, texts=texts)
        except REDIS_DOWN as exc:
            mark_redis_down()
            raise QueueUnavailableError("Redis went away during a bulk enqueue; nothing was written, try again") from exc
        if batch is not None:
            raise QueueUnavailableError("a batch needs Redis, which is unreachable now; try again in a moment")
        return [self._enqueue_fallback(spec, kwargs, options, job_limits)
                for kwargs, job_limits in zip(encoded, limit_fields)]

    def _enqueue_redis(self, spec: TaskSpec, payloads: list[dict[str, Any]], options: EnqueueOptions,
                       limit_fields: list[str | None], hooks: Hooks | None = None, pass_result: str | None = None,
                       batch: dict[str, Any] | None = None, texts: list[str] | None = None) -> list[str]:
        if not tracing.enqueue_traced():  # the common case: no span to open (about 10 µs an enqueue)
            return self._write_redis(spec, payloads, options, limit_fields, hooks, pass_result, batch, texts, {})
        with tracing.enqueue_span(spec.name, self.short_name) as carrier:
            ids = self._write_redis(spec, payloads, options, limit_fields, hooks, pass_result, batch, texts, carrier)
            if carrier:
                tracing.set_job_id(ids[0])
        return ids

    def _write_redis(self, spec: TaskSpec, payloads: list[dict[str, Any]], options: EnqueueOptions,
                     limit_fields: list[str | None], hooks: Hooks | None, pass_result: str | None,
                     batch: dict[str, Any] | None, texts: list[str] | None, carrier: dict[str, Any]) -> list[str]:
        unique = None
        if options.unique_for is not None:
            unique = keys.unique(self.short_name, spec.name, payloads[0], options.unique_key)
        trace = ["fk_trace", json.dumps(carrier)] if carrier else []  # empty unless [otel] is on
        jobs = []
        for i, (kwargs, job_limits) in enumerate(zip(payloads, limit_fields)):
            job_id = options.job_id or new_job_id()
            extra = list(trace)
            if hooks:
                extra += hooks.fields(job_id, options.user_id)
            if batch is not None:
                extra += ["fk_batch", batch["id"], "fk_hooks", "1"]
            jobs.append(lifecycle.NewJob(
                job_id=job_id, task_name=spec.name, kwargs=kwargs,
                max_retries=options.max_retries, timeout=options.timeout, run_at=options.run_at,
                priority=options.priority, check_existing=options.job_id is not None,
                unique_key=unique, unique_for=options.unique_for, extra_fields=extra, limits=job_limits,
                depends_on=hooks.depends_on if hooks else None, dependency_policy=hooks.policy if hooks else "cancel",
                pass_result=pass_result, expires_at=options.expires_at, retry_policy=options.retry_field,
                max_stalls=spec.max_stalls,
                group=options.group_of(kwargs), group_concurrency=options.group_concurrency,
                kwargs_json=texts[i] if texts is not None else None,
            ))
        return lifecycle.enqueue(get_redis(), self.short_name, jobs, options.user_id,
                                 {"key": batch["key"], "fields": batch["fields"]} if batch is not None else None)

    def _enqueue_fallback(self, spec: TaskSpec, kwargs: dict[str, Any], options: EnqueueOptions,
                          job_limits: str | None) -> str:
        if not get_settings().fallback_enabled:
            raise QueueUnavailableError("Redis is unreachable and the fallback is off (JOBS_FALLBACK_ENABLED=0)")
        if not spec.fallback:
            raise QueueUnavailableError(
                f"Redis is unreachable and task {spec.name!r} does not run in web processes (fallback=False); "
                f"try again when Redis is back")
        fallback = get_fallback()
        job_id = options.job_id or new_job_id()
        delay = max(0.0, options.run_at - time.time()) if options.run_at else 0.0
        job = Job(
            job_id=job_id,
            queue=self.short_name,
            task_name=spec.name,
            status=JobStatus.DELAYED if delay else JobStatus.PENDING,
            payload=kwargs,
            max_retries=options.max_retries,
            user_id=options.user_id,
            created_at=time.time(),
            mode="fallback",
            expires_at=options.expires_at,
            group=options.group_of(kwargs),
        )
        return fallback.submit(job, spec, delay, timeout=options.timeout, priority=options.priority,
                               limits=job_limits, retry_policy=options.retry_field,
                               group_concurrency=options.group_concurrency)

    # --- reading ------------------------------------------------------------------------------
    def get_job_status(self, job_id: str) -> Job | None:
        """The job with this id (any queue, Redis or fallback), or None if unknown or expired."""
        return get_job(job_id)

    def get_stats(self) -> dict[str, Any]:
        """Counts for this queue, O(1) in the number of jobs (lengths, set sizes, one counter hash).

        ``pending/delayed/active/completed/failed/canceled_jobs`` are jobs in that state now
        (completed, failed and canceled ones while they are kept); ``total_jobs`` counts every run
        ever created; the rest are lifetime counts. The README defines each field.
        """
        full = self.name
        connection = get_redis()
        with connection.pipeline(transaction=False) as pipe:
            for key in keys.queue_lists(full):
                pipe.llen(key)
            for key in (keys.scheduled(full), keys.started(full), keys.finished(full), keys.failed(full),
                        keys.canceled(full)):
                pipe.zcard(key)
            pipe.zcount(keys.scheduled(full), "+inf", "+inf")
            pipe.hgetall(keys.queue_counters(self.short_name))
            pipe.scard(keys.queue_workers(full))
            pipe.sismember(keys.paused_queues(), full)
            for key in keys.queue_lists(full):  # latency: each list's head, the next job it gives out
                pipe.lindex(key, 0)
            pipe.zrange(keys.scheduled(full), 0, 0, withscores=True)  # the first delayed job's run time
            (high, normal, low, delayed, active, completed, failed, canceled, limited, raw, workers,
             paused, *heads, first_delayed) = pipe.execute()
        latency, by_priority = queue_latency(connection, heads, first_delayed)
        grouped = groups.list_groups(self.short_name, limit=groups.TOP_GROUPS)
        pending = high + normal + low + grouped["waiting"]  # grouped jobs wait in their group's list
        events: dict[str, int] = {}
        for field_name, value in raw.items():
            event = field_name.decode().rpartition(":")[2]
            events[event] = events.get(event, 0) + int(value)
        return {
            "pending_jobs": pending,
            "delayed_jobs": delayed,
            "active_jobs": active,
            "completed_jobs": completed,
            "failed_jobs": failed,
            "canceled_jobs": canceled,
            "total_jobs": events.get("enqueued", 0),
            "total_results": events.get("completed", 0) + events.get("failed", 0),
            "retried_jobs": events.get("retried", 0),
            "abandoned_jobs": events.get("abandoned", 0),
            "workers": workers,
            "fallback_pending": get_fallback().pending_count(),
            "paused": bool(paused),
            "limited_jobs": limited,  # delayed jobs waiting for a rate or concurrency limit
            "deferred_jobs": events.get("deferred", 0),  # lifetime RetryAfter deferrals
            # lifetime: ended by a claim without running, their expires passed ("*:expired" counts registry sweeps)
            "expired_jobs": events.get("expired", 0) - int(raw.get(b"*:expired", 0)),
            "latency_seconds": latency,  # age of the oldest job waiting to run, 0 when none
            "latency_by_priority": by_priority,  # the same per priority list: high, normal, low
            "groups": grouped["total"],  # job groups with jobs waiting or running (core.queue.groups)
            "top_groups": grouped["groups"],  # the 5 with the most waiting: group, waiting, running, oldest_age
        }

    def get_failed_jobs(self, limit: int = 20) -> list[Job]:
        """Failed jobs of this queue, newest failure first (a bounded range read)."""
        ids = [i.decode() for i in get_redis().zrevrange(keys.failed(self.name), 0, limit - 1)]
        return fetch_jobs(ids)

    # --- acting --------------------------------------------------------------------------------
    def fail_job(self, job_id: str, error: str, retry: bool = True) -> Job:
        """Fail a job that has not started, by hand, recording ``error``.

        With ``retry`` and attempts left it is retried after the usual back-off; otherwise it
        ends failed. A running job belongs to its worker, so it answers with a conflict.
        """
        validate_job_id(job_id)
        if get_fallback().get(job_id) is not None:
            raise InvalidJobStateError(f"job {job_id} runs in the in-process fallback; fail_job applies to Redis jobs")
        current = must_get(job_id)
        ok, _status = lifecycle.fail_pending(get_redis(), job_id, get_settings().full_queue_name(current.queue),
                                             error, retry)
        if not ok:
            current = must_get(job_id)
            raise InvalidJobStateError(
                f"job {job_id} is {current.status.value}; only pending, delayed or retrying jobs can be failed by hand"
            )
        return must_get(job_id)

    def cancel_job(self, job_id: str) -> Job:
        return cancel_job(job_id)

    def stop_job(self, job_id: str, by: str = "an operator") -> Job:
        return stop_job(job_id, by)

    def pause(self) -> bool:
        """Workers take no new jobs from this queue until :meth:`resume` (running ones finish)."""
        return pause.pause(self.short_name)

    def resume(self) -> bool:
        return pause.resume(self.short_name)

    def is_paused(self) -> bool:
        """Whether workers are held off this queue (DESIGN.md's name; ``paused`` is the same)."""
        return pause.is_paused(self.short_name)

    @property
    def paused(self) -> bool:
        return pause.is_paused(self.short_name)

    # --- job groups (core.queue.groups) ----------------------------------------------------------
    def set_group_weight(self, group: str, weight: float) -> None:
        """Give ``group`` ``weight`` turns in the rotation for each turn of a weight-1 group."""
        groups.set_weight(self.short_name, group, weight)

    def pause_group(self, group: str) -> bool:
        """Hold one group's jobs on this queue without touching the others; True if it was running."""
        return groups.pause(self.short_name, group)

    def resume_group(self, group: str) -> bool:
        """Let a paused group run again; True if it was paused."""
        return groups.resume(self.short_name, group)

    def groups(self, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """``[{"group", "waiting", "running", "oldest_age", "weight", "paused"}]``, largest backlog first."""
        return groups.list_groups(self.short_name, limit=limit, offset=offset)["groups"]

    # --- batches ---------------------------------------------------------------------------------
    def enqueue_batch(self, task: str, payloads: list[dict[str, Any]], on_complete: str | None = None,
                      user_id: str | int | None = None, **options: Any) -> str:
        """Queue ``task`` once per payload on this queue as one batch; returns the batch id.
        ``on_complete`` runs once when every member has ended (see :func:`core.api.batches.enqueue_batch`)."""
        return batches.enqueue_batch(self, task, payloads, on_complete=on_complete, user_id=user_id, **options)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """``{"batch_id", "total", "completed", "failed", "pending", "done", ...}`` of any queue's batch."""
        return batches.get_batch(batch_id)

    def wait_for(self, job_id: str, timeout: float) -> Job:
        """Block until the job has ended and return it; :class:`TimeoutError` if still going."""
        return wait_for(job_id, timeout)

    def retry_job(self, job_id: str) -> Job:
        return retry_job(job_id)


def queue_latency(connection: Any, heads: list[bytes | None],
                  first_delayed: list[tuple[bytes, float]]) -> tuple[float, dict[str, float]]:
    """``(latency_seconds, {"high", "normal", "low": seconds})`` from each priority list's head id and
    the queue's first delayed entry: at most 3 HGETs in one more round trip, whatever the backlog.

    A list's head is its oldest job: jobs are pushed at the tail with ``enqueued_at`` = when they became
    ready (enqueue, a delayed job or retry coming due, dependencies ended, a retry by hand), and the
    few put back at the head (a stalled attempt, a job a limit lets go) keep their earlier time. A
    delayed job or retry already due but not yet moved to its list (no worker runs the promoter)
    waits too: it counts from its run time, so a queue with no workers still shows its latency."""
    now = time.time()
    waiting = [(priority, head.decode()) for priority, head in zip(keys.PRIORITIES, heads) if head]
    by_priority = dict.fromkeys(keys.PRIORITIES, 0.0)
    if waiting:
        with connection.pipeline(transaction=False) as pipe:
            for _priority, job_id in waiting:
                pipe.hget(keys.job(job_id), "enqueued_at")
            stamps = pipe.execute()
        for (priority, _job_id), stamp in zip(waiting, stamps):
            since = parse_time(stamp)
            if since is not None:
                by_priority[priority] = round(max(0.0, now - since), 3)
    overdue = round(max(0.0, now - first_delayed[0][1]), 3) if first_delayed else 0.0
    return max(overdue, *by_priority.values()), by_priority


def concurrency_option(concurrency_limit: Any, concurrency: Any) -> Any:
    """DESIGN.md's ``concurrency_limit=`` and the older ``concurrency=`` name one option."""
    if concurrency_limit is not None and concurrency is not None and concurrency_limit != concurrency:
        raise InvalidPayloadError(f"give concurrency_limit or concurrency (the same option), not both: got "
                                  f"concurrency_limit={concurrency_limit!r} and concurrency={concurrency!r}")
    return concurrency_limit if concurrency_limit is not None else concurrency


# --- the three queues ----------------------------------------------------------------------------
email_queue = RedisQueue("email")
ai_queue = RedisQueue("ai")
crm_queue = RedisQueue("crm")
_QUEUES = {"email": email_queue, "ai": ai_queue, "crm": crm_queue}


def get_queue(name: str) -> RedisQueue:
    """The queue named ``email`` or ``fikiri:email`` (either form)."""
    settings = get_settings()
    queue = _QUEUES.get(settings.short_queue_name(name)) if isinstance(name, str) else None
    if queue is None:
        accepted = ", ".join(f"{q} ({settings.full_queue_name(q)})" for q in QUEUE_NAMES)
        raise UnknownQueueError(f"unknown queue {str(name)[:80]!r}; accepted: {accepted}")
    return queue


def all_queues() -> list[RedisQueue]:
    return [_QUEUES[name] for name in QUEUE_NAMES]


def get_email_queue() -> RedisQueue:
    return email_queue


def get_ai_queue() -> RedisQueue:
    return ai_queue


def get_crm_queue() -> RedisQueue:
    return crm_queue


# --- enqueue helpers for the common domain jobs --------------------------------------------------
def send_email_async(to: str, subject: str, body: str, user_id: str | int | None = None, **options: Any) -> str:
    """Send an email in the background (task ``send_email`` on the email queue)."""
    return email_queue.enqueue_job(
        "send_email", {"to": to, "subject": subject, "body": body}, user_id=user_id, **options
    )


def process_ai_request_async(prompt: str, user_id: str | int | None = None, **options: Any) -> str:
    """Answer an AI prompt in the background (task ``process_ai_request`` on the ai queue)."""
    payload = {"prompt": prompt, "user_id": None if user_id is None else str(user_id)}
    return ai_queue.enqueue_job("process_ai_request", payload, user_id=user_id, **options)


def upsert_crm_contact_async(
    external_id: str, email: str, name: str = "", user_id: str | int | None = None, **options: Any
) -> str:
    """Create or update a CRM contact in the background (task ``upsert_contact`` on the crm queue)."""
    payload = {"external_id": external_id, "email": email, "name": name}
    return crm_queue.enqueue_job("upsert_contact", payload, user_id=user_id, **options)
