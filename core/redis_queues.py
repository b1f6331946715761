"""RedisQueue: the job API web handlers call. Wraps an RQ queue; JSON jobs; registered tasks only.

    q = get_email_queue()
    job_id = q.enqueue_job("process_gmail_sync", {"job_id": sync_id}, max_retries=3, user_id=42)
    job = q.get_job_status(job_id)          # Job | None, whichever queue or engine holds it

Enqueue validates in the caller (unknown task, non-JSON or oversized payload, bad options raise a
:class:`~core.errors.JobsError`), then writes to Redis in one pipelined round trip. When Redis is
unreachable the job goes to the in-process threading fallback instead and the id comes back at
once. Stats, status reads and a user's recent jobs never scan keys.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import JobStatus as RQStatus
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from core import keys, task_registry
from core.backoff import retry_delays
from core.config import QUEUE_NAMES, get_settings
from core.connection import get_redis, mark_redis_down, redis_available
from core.errors import (
    InvalidJobStateError,
    InvalidPayloadError,
    JobNotFoundError,
    JobsError,
    PayloadTooLargeError,
    QueueUnavailableError,
    UnknownQueueError,
    UnknownTaskError,
)
from core.fallback import get_fallback
from core.job_model import Job, JobStatus, fetch_latest_results, job_from_rq
from core.rq_job import SERIALIZER, TaskJob, queue_short_name
from core.task_object import Task
from core.task_registry import TaskSpec

__all__ = [
    "RedisQueue", "Job", "JobStatus", "email_queue", "ai_queue", "crm_queue", "get_email_queue",
    "get_ai_queue", "get_crm_queue", "get_queue", "get_job", "send_email_async",
    "process_ai_request_async", "upsert_crm_contact_async", "validate_job_id",
]

logger = logging.getLogger(__name__)

PRIORITIES = ("high", "normal")
MAX_RETRIES_LIMIT = 25
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@+:-]{1,128}$")
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


class InvalidJobIdError(JobsError):
    code = "invalid_job_id"


def validate_job_id(job_id: Any) -> str:
    """Return ``job_id`` if it is a well-formed id, else raise a clear error."""
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise InvalidJobIdError(
            f"malformed job id {str(job_id)[:80]!r}: expected 1-128 characters of letters, digits, "
            f"'_', '-', '.' or ':', starting with a letter or digit"
        )
    return job_id


def _validate_user_id(user_id: Any) -> str | None:
    if user_id is None:
        return None
    if isinstance(user_id, bool) or not isinstance(user_id, str | int):
        raise InvalidPayloadError(f"user_id must be a string or an integer, got {type(user_id).__name__}")
    text = str(user_id)
    if not _USER_ID_RE.match(text):
        raise InvalidPayloadError(
            f"malformed user_id {text[:80]!r}: expected 1-128 letters, digits or _ . @ + : -"
        )
    return text


def _encode_payload(payload: Any, limit: int) -> dict[str, Any]:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise InvalidPayloadError(
            f"payload must be a JSON object (a dict of keyword arguments), got {type(payload).__name__}"
        )
    for key in payload:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidPayloadError(f"payload key {key!r} is not a valid keyword argument name")
    try:
        encoded = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidPayloadError(
            f"payload is not JSON-serialisable ({exc}); accepted: dict, list, str, int, float, bool, None"
        ) from exc
    size = len(encoded.encode())
    if size > limit:
        raise PayloadTooLargeError(
            f"payload is {size} bytes of JSON, over the {limit}-byte limit (JOBS_MAX_PAYLOAD_BYTES); "
            f"pass ids and references, not whole objects"
        )
    return json.loads(encoded)  # what the worker will receive: tuples become lists, etc.


def _when(delay: float | int | timedelta | None, at: datetime | None) -> datetime | None:
    """The UTC time a delayed job should run, or None to run now.

    Rounded up to the next whole second: RQ's scheduler keeps whole seconds and would otherwise
    start a job up to a second before the time asked for.
    """
    run_at = _requested_time(delay, at)
    if run_at is None:
        return None
    return datetime.fromtimestamp(math.ceil(run_at.timestamp()), UTC)


def _requested_time(delay: float | int | timedelta | None, at: datetime | None) -> datetime | None:
    if delay is not None and at is not None:
        raise InvalidPayloadError("give either delay or at, not both")
    if delay is not None:
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, int | float) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise InvalidPayloadError(f"delay must be seconds (a number) or a timedelta, got {type(delay).__name__}")
        if seconds < 0 or seconds != seconds:
            raise InvalidPayloadError(f"delay must be >= 0 seconds, got {delay!r}")
        return datetime.now(UTC) + timedelta(seconds=seconds) if seconds > 0 else None
    if at is not None:
        if not isinstance(at, datetime):
            raise InvalidPayloadError(f"at must be a datetime, got {type(at).__name__}")
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return None


def _checked_options(spec: TaskSpec, max_retries: Any, priority: Any) -> int:
    """The effective retry count (call, else task, else setting), after checking both options."""
    if max_retries is None:
        max_retries = spec.max_retries if spec.max_retries is not None else get_settings().default_max_retries
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise InvalidPayloadError(f"max_retries must be a whole number from 0 to {MAX_RETRIES_LIMIT}, got {max_retries!r}")
    if priority not in PRIORITIES:
        raise InvalidPayloadError(f"unknown priority {priority!r}; accepted: {', '.join(PRIORITIES)}")
    return max_retries


class RedisQueue:
    """One named queue (``email``, ``ai`` or ``crm``): register tasks, enqueue, inspect, act."""

    def __init__(self, short_name: str) -> None:
        if short_name not in QUEUE_NAMES:
            raise UnknownQueueError(f"unknown queue {short_name!r}; accepted: {', '.join(QUEUE_NAMES)}")
        self.short_name = short_name
        self._rq_queue: Queue | None = None
        self._rq_connection: redis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisQueue({self.name!r})"

    @property
    def name(self) -> str:
        """The RQ queue name, ``fikiri:email``."""
        return get_settings().full_queue_name(self.short_name)

    @property
    def rq_queue(self) -> Queue:
        """The underlying RQ queue (JSON serializer, registered-task job class)."""
        connection = get_redis()
        if self._rq_queue is None or self._rq_connection is not connection or self._rq_queue.name != self.name:
            self._rq_queue = Queue(
                self.name,
                connection=connection,
                job_class=TaskJob,
                serializer=SERIALIZER,
                default_timeout=get_settings().timeout_for(self.short_name),
            )
            self._rq_connection = connection
        return self._rq_queue

    def is_connected(self) -> bool:
        """Whether Redis answered recently (cached; never hangs)."""
        return redis_available()

    # --- the task registry ------------------------------------------------------------------
    def register_task(self, name: str, func: Callable[..., Any], max_retries: int | None = None) -> TaskSpec:
        """Allow workers to run ``func`` for jobs naming ``name`` on this queue."""
        return task_registry.register(self.short_name, name, func, max_retries)

    def task(self, max_retries: int | None = None, name: str | None = None) -> Callable:
        """Decorator: register the function as a task under its own name (or ``name``)."""

        def decorate(func: Callable[..., Any]) -> Task:
            self.register_task(name or func.__name__, func, max_retries)
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
    ) -> str:
        """Queue ``task_name(**payload)`` and return the job id. See the module docstring."""
        settings = get_settings()
        spec = self._spec(task_name)
        kwargs = _encode_payload(payload, settings.max_payload_bytes)
        max_retries = _checked_options(spec, max_retries, priority)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
            raise InvalidPayloadError(f"timeout must be a positive whole number of seconds, got {timeout!r}")
        if job_id is not None:
            validate_job_id(job_id)
        user = _validate_user_id(user_id)
        run_at = _when(delay, at)
        meta = {"max_retries": max_retries, "priority": priority}
        if user is not None:
            meta["user_id"] = user

        if redis_available():
            try:
                return self._enqueue_redis(spec, kwargs, meta, max_retries, run_at, priority, job_id, user, timeout)
            except _REDIS_DOWN as exc:
                mark_redis_down()
                logger.warning("enqueue of %s to Redis failed (%s); using the in-process fallback", task_name, exc)
        return self._enqueue_fallback(spec, kwargs, max_retries, run_at, job_id, user)

    def enqueue_many(
        self,
        task_name: str,
        payloads: list[dict[str, Any]],
        *,
        max_retries: int | None = None,
        priority: str = "normal",
        user_id: str | int | None = None,
        timeout: int | None = None,
    ) -> list[str]:
        """Queue ``task_name`` once per payload in one pipelined round trip; returns the ids.

        Every payload is validated first, so a bad one rejects the whole batch before anything is
        written. With Redis down the jobs go to the fallback one by one.
        """
        settings = get_settings()
        spec = self._spec(task_name)
        encoded = [_encode_payload(p, settings.max_payload_bytes) for p in payloads]
        max_retries = _checked_options(spec, max_retries, priority)
        user = _validate_user_id(user_id)
        if not redis_available():
            return [self._enqueue_fallback(spec, kwargs, max_retries, None, None, user) for kwargs in encoded]
        queue = self.rq_queue
        meta = {"max_retries": max_retries, "priority": priority, **({"user_id": user} if user else {})}
        retry = Retry(max=max_retries, interval=retry_delays(max_retries)) if max_retries else None
        ids = []
        try:
            with queue.connection.pipeline() as pipe:
                for kwargs in encoded:
                    job = queue.create_job(spec.name, kwargs=kwargs, timeout=timeout, result_ttl=settings.result_ttl,
                                           failure_ttl=settings.failure_ttl, description=f"{spec.name} on {self.short_name}",
                                           meta=dict(meta), retry=retry)
                    queue.enqueue_job(job, pipeline=pipe, at_front=priority == "high")
                    ids.append(job.id)
                self._record_enqueue(pipe, ids, user)
                pipe.execute()
        except _REDIS_DOWN as exc:
            mark_redis_down()
            raise QueueUnavailableError("Redis went away during a bulk enqueue; nothing was written, try again") from exc
        return ids

    def _enqueue_redis(
        self,
        spec: TaskSpec,
        kwargs: dict[str, Any],
        meta: dict[str, Any],
        max_retries: int,
        run_at: datetime | None,
        priority: str,
        job_id: str | None,
        user: str | None,
        timeout: int | None,
    ) -> str:
        settings = get_settings()
        queue = self.rq_queue
        job = queue.create_job(
            spec.name,
            kwargs=kwargs,
            timeout=timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.failure_ttl,
            description=f"{spec.name} on {self.short_name}",
            job_id=job_id,
            meta=meta,
            retry=Retry(max=max_retries, interval=retry_delays(max_retries)) if max_retries else None,
        )
        job.enqueue_at_front = priority == "high"
        unique = job_id is not None
        connection = queue.connection
        with connection.pipeline() as pipe:
            try:
                if run_at is not None:
                    queue.schedule_job(job, run_at, pipeline=None if unique else pipe, unique=unique)
                else:
                    queue.enqueue_job(job, pipeline=None if unique else pipe, at_front=priority == "high", unique=unique)
            except DuplicateJobError:
                logger.info("job %s already exists; not enqueued again", job_id)
                return job.id
            self._record_enqueue(pipe, [job.id], user)
            pipe.execute()
        return job.id

    def _record_enqueue(self, pipe: Any, job_ids: list[str], user: str | None) -> None:
        """Counters and the user's index, in the caller's pipeline."""
        settings = get_settings()
        pipe.hincrby(keys.queue_counters(self.short_name), "enqueued", len(job_ids))
        if user is not None:
            user_key = keys.user_jobs(user)
            pipe.lpush(user_key, *job_ids)
            pipe.ltrim(user_key, 0, settings.user_index_size - 1)
            pipe.expire(user_key, settings.user_index_ttl)
            pipe.sadd(keys.users_with_jobs(), user)

    def _enqueue_fallback(
        self,
        spec: TaskSpec,
        kwargs: dict[str, Any],
        max_retries: int,
        run_at: datetime | None,
        job_id: str | None,
        user: str | None,
    ) -> str:
        if not get_settings().fallback_enabled:
            raise QueueUnavailableError("Redis is unreachable and the fallback is off (JOBS_FALLBACK_ENABLED=0)")
        fallback = get_fallback()
        if job_id is not None and fallback.get(job_id) is not None:
            return job_id
        job_id = job_id or str(uuid.uuid4())
        delay = max(0.0, (run_at - datetime.now(UTC)).total_seconds()) if run_at else 0.0
        job = Job(
            job_id=job_id,
            queue=self.short_name,
            task_name=spec.name,
            status=JobStatus.DELAYED if delay else JobStatus.PENDING,
            payload=kwargs,
            max_retries=max_retries,
            user_id=user,
            created_at=time.time(),
            mode="fallback",
        )
        fallback.submit(job, spec, delay)
        return job_id

    # --- reading ------------------------------------------------------------------------------
    def get_job_status(self, job_id: str) -> Job | None:
        """The job with this id (any queue, Redis or fallback), or None if unknown or expired."""
        return get_job(job_id)

    def get_stats(self) -> dict[str, int]:
        """Counts for this queue, O(1) in the number of jobs (lengths, set sizes, counters)."""
        queue = self.rq_queue
        connection = queue.connection
        with connection.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            for registry in self._registries(queue):
                pipe.zcard(registry.key)
            pipe.hgetall(keys.queue_counters(self.short_name))
            pipe.scard(WORKERS_BY_QUEUE_KEY % queue.name)
            pending, delayed, active, completed, failed, canceled, counters, workers = pipe.execute()
        counters = {k.decode(): int(v) for k, v in counters.items()}
        return {
            "pending_jobs": pending,
            "delayed_jobs": delayed,
            "active_jobs": active,
            "completed_jobs": completed,
            "failed_jobs": failed,
            "canceled_jobs": canceled,
            "total_jobs": counters.get("enqueued", 0),
            "total_results": counters.get("completed", 0) + counters.get("failed", 0),
            "retried_jobs": counters.get("retried", 0),
            "workers": workers,
            "fallback_pending": get_fallback().pending_count(),
        }

    @staticmethod
    def _registries(queue: Queue) -> list[Any]:
        """Scheduled, started, finished, failed, canceled: the order get_stats reads them in."""
        common = {"queue": queue, "job_class": TaskJob, "serializer": SERIALIZER}
        return [
            ScheduledJobRegistry(**common),
            StartedJobRegistry(**common),
            FinishedJobRegistry(**common),
            FailedJobRegistry(**common),
            CanceledJobRegistry(**common),
        ]

    def get_failed_jobs(self, limit: int = 20) -> list[Job]:
        """Failed jobs of this queue, newest failure first (a bounded range read)."""
        queue = self.rq_queue
        ids = [i.decode() for i in queue.connection.zrevrange(FailedJobRegistry(queue=queue).key, 0, limit - 1)]
        return fetch_jobs(ids)

    # --- acting --------------------------------------------------------------------------------
    def fail_job(self, job_id: str, error: str, retry: bool = True) -> Job:
        """Fail a job that has not started, by hand, recording ``error``.

        With ``retry`` and attempts left it is retried after the usual back-off; otherwise it
        ends failed. A running job belongs to its worker, so it answers with a conflict.
        """
        if get_fallback().get(job_id) is not None:
            raise InvalidJobStateError(f"job {job_id} runs in the in-process fallback; fail_job applies to Redis jobs")
        rq_job = _fetch_rq(job_id)
        current = job_from_rq(rq_job, "")
        if current.status not in (JobStatus.PENDING, JobStatus.DELAYED, JobStatus.RETRYING):
            raise InvalidJobStateError(
                f"job {job_id} is {current.status.value}; only pending, delayed or retrying jobs can be failed by hand"
            )
        queue = _queue_of(rq_job).rq_queue
        counters = keys.queue_counters(queue_short_name(queue.name))
        rq_job.meta["error"] = error
        with queue.connection.pipeline() as pipe:
            queue.remove(rq_job, pipeline=pipe)
            ScheduledJobRegistry(queue=queue).remove(rq_job, pipeline=pipe)
            pipe.hset(rq_job.key, "meta", rq_job.serializer.dumps(rq_job.meta))
            if retry and rq_job.retries_left:
                rq_job.retry(queue, pipe)
                pipe.hincrby(counters, "retried", 1)
            else:
                rq_job.set_status(RQStatus.FAILED, pipeline=pipe)
                FailedJobRegistry(queue=queue).add(rq_job, ttl=rq_job.failure_ttl, exc_string=error, pipeline=pipe)
                pipe.hincrby(counters, "failed", 1)
            pipe.execute()
        return _must_get(job_id)

    def cancel_job(self, job_id: str) -> Job:
        return cancel_job(job_id)

    def retry_job(self, job_id: str) -> Job:
        return retry_job(job_id)


# --- module-level lookups (a job id alone tells which queue holds it) ---------------------------
def _fetch_rq(job_id: str) -> TaskJob:
    validate_job_id(job_id)
    try:
        return TaskJob.fetch(job_id, connection=get_redis(), serializer=SERIALIZER)
    except NoSuchJobError as exc:
        raise JobNotFoundError(f"Job {job_id} does not exist") from exc


def _queue_of(rq_job: TaskJob) -> RedisQueue:
    return get_queue(queue_short_name(rq_job.origin or "email"))


def _must_get(job_id: str) -> Job:
    job = get_job(job_id)
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist")
    return job


def get_job(job_id: str) -> Job | None:
    """A job by id: the fallback's memory first, then Redis (one HGETALL plus one XREVRANGE)."""
    validate_job_id(job_id)
    fallback_job = get_fallback().get(job_id)
    if fallback_job is not None:
        return fallback_job
    jobs = fetch_jobs([job_id])
    return jobs[0] if jobs else None


def fetch_jobs(job_ids: list[str]) -> list[Job]:
    """Jobs by id in the given order, skipping ids whose job has expired (two round trips)."""
    if not job_ids:
        return []
    connection = get_redis()
    rq_jobs = [j for j in TaskJob.fetch_many(job_ids, connection=connection, serializer=SERIALIZER) if j is not None]
    latest = fetch_latest_results(connection, rq_jobs)
    return [job_from_rq(j, queue_short_name(j.origin or ""), latest.get(j.id)) for j in rq_jobs]


def get_user_jobs(user_id: str | int, limit: int = 20) -> list[Job]:
    """A user's newest jobs first (the bounded per-user index, plus any fallback jobs)."""
    user = _validate_user_id(user_id)
    assert user is not None
    jobs: list[Job] = []
    if redis_available():
        try:
            ids = [i.decode() for i in get_redis().lrange(keys.user_jobs(user), 0, limit - 1)]
            jobs = fetch_jobs(list(dict.fromkeys(ids)))
        except _REDIS_DOWN:
            mark_redis_down()
    jobs.extend(get_fallback().jobs_for_user(user, limit))
    jobs.sort(key=lambda j: j.created_at or 0, reverse=True)
    return jobs[:limit]


def cancel_job(job_id: str) -> Job:
    """Cancel a pending or delayed job; anything else answers with a clear conflict."""
    fallback_job = get_fallback().cancel(job_id)
    if fallback_job is not None:
        if fallback_job.status != JobStatus.CANCELED:
            raise InvalidJobStateError(f"job {job_id} is {fallback_job.status.value}; only pending or delayed jobs can be canceled")
        return fallback_job
    rq_job = _fetch_rq(job_id)
    current = job_from_rq(rq_job, "")
    if current.status not in (JobStatus.PENDING, JobStatus.DELAYED, JobStatus.RETRYING):
        raise InvalidJobStateError(
            f"job {job_id} is {current.status.value}; only pending, delayed or retrying jobs can be canceled"
        )
    try:
        rq_job.cancel()
    except InvalidJobOperation as exc:
        raise InvalidJobStateError(str(exc)) from exc
    get_redis().hincrby(keys.queue_counters(queue_short_name(rq_job.origin)), "canceled", 1)
    return _must_get(job_id)


def retry_job(job_id: str) -> Job:
    """Requeue a failed job for one more attempt."""
    rq_job = _fetch_rq(job_id)
    if rq_job.get_status(refresh=False) != RQStatus.FAILED:
        current = job_from_rq(rq_job, "")
        raise InvalidJobStateError(f"job {job_id} is {current.status.value}; only failed jobs can be retried")
    rq_job.meta["manual_retries"] = int(rq_job.meta.get("manual_retries", 0)) + 1
    rq_job.meta.pop("error", None)
    rq_job.save_meta()
    queue = _queue_of(rq_job).rq_queue
    FailedJobRegistry(queue=queue).requeue(rq_job)
    return _must_get(job_id)


# --- the three queues ----------------------------------------------------------------------------
email_queue = RedisQueue("email")
ai_queue = RedisQueue("ai")
crm_queue = RedisQueue("crm")
_QUEUES = {"email": email_queue, "ai": ai_queue, "crm": crm_queue}


def get_queue(name: str) -> RedisQueue:
    """The queue named ``email`` or ``fikiri:email`` (either form)."""
    prefix = get_settings().queue_prefix + ":"
    short = name[len(prefix):] if isinstance(name, str) and name.startswith(prefix) else name
    queue = _QUEUES.get(short) if isinstance(short, str) else None
    if queue is None:
        accepted = ", ".join(f"{q} ({prefix}{q})" for q in QUEUE_NAMES)
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
