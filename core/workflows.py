"""Jobs in steps: dependencies, callbacks, chains and batches, all JSON, all in Redis.

Real Fikiri work comes in steps (sync the inbox, classify each new message, upsert CRM contacts,
send the digest). Everything here is decided inside the lifecycle scripts (``core/lua/hooks_lib.lua``),
in the same atomic step as the job end that triggers it, so a SIGKILL or two workers finishing at
the same instant can neither lose nor repeat a step:

* ``depends_on=[ids]``: the job waits (``delayed``, reason "waiting for 2 job(s) to end: ...")
  until every dependency completed; if one fails or is canceled, it is canceled with the reason
  ("dependency <id> failed: <error>"), and so are the jobs waiting for it, unless
  ``on_dependency_failure="run"``.
* ``on_success="task"`` / ``on_failure="task"`` (or ``"queue:task"``): a registered task run as an
  ordinary job when the job ends, with ``parent_id`` and ``result`` (or ``outcome`` and ``error``).
  ``on_failure`` runs when the job ends failed or canceled.
* :func:`chain`: steps in order, each receiving the previous step's result as ``previous``.
* :func:`enqueue_batch`: the callback runs exactly once, when every member has ended, with the
  counts; :func:`get_batch` reads its progress.

Hooks run on a job's first final end only: a failed job retried by hand later does not run them
again. They need Redis: with Redis down these options answer 503 instead of running in the
fallback, which could not honour them.

Cost: a job with no hooks pays one HGET inside the finishing script; a dependency, a callback or a
batch member adds a few commands to the script that ends it, none to the worker's round trips.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from core import keys, lifecycle
from core.config import QUEUE_NAMES, get_settings
from core.connection import get_redis, redis_available
from core.errors import InvalidPayloadError, JobNotFoundError, JobsError, QueueUnavailableError, UnknownTaskError
from core.job_options import validate_job_id, validate_user_id
from core.rq_compat import format_time

logger = logging.getLogger(__name__)

DEPENDENCY_POLICIES = ("cancel", "run")
MAX_DEPENDENCIES = 100
MAX_BATCH = 10_000
PREVIOUS = "previous"  # the payload key a chain step receives the previous step's result under


# --- callbacks -------------------------------------------------------------------------------------
def resolve_task(target: Any, default_queue: str, what: str) -> tuple[str, str]:
    """``"task"`` (on ``default_queue``) or ``"queue:task"`` -> (queue, task), checked registered."""
    from core import task_registry

    if not isinstance(target, str) or not target or len(target) > 200:
        raise InvalidPayloadError(f"{what} must be a registered task name ('task' or 'queue:task'), "
                                  f"got {str(target)[:80]!r}")
    queue, _, task = target.rpartition(":")
    queue = queue or default_queue
    if queue not in QUEUE_NAMES:
        raise InvalidPayloadError(f"{what} {target!r} names queue {queue!r}; accepted: {', '.join(QUEUE_NAMES)}")
    if task_registry.get(queue, task) is None:
        registered = ", ".join(task_registry.names(queue)) or "none"
        raise UnknownTaskError(f"{what} {target!r}: no task {task!r} on queue {queue}; registered: {registered}")
    return queue, task


def callback_spec(queue: str, task: str, key_name: str, key_value: str, user: str | None, why: str) -> str:
    """The job hooks_lib.lua creates when the time comes, as JSON: every field but the end of its
    payload, which the script completes with the parent's result or error (or the batch's counts)."""
    from core import task_registry

    spec = task_registry.get(queue, task)
    settings = get_settings()
    full = settings.full_queue_name(queue)
    job_id = uuid.uuid4().hex
    max_retries = spec.max_retries if spec and spec.max_retries is not None else settings.default_max_retries
    new = lifecycle.NewJob(job_id=job_id, task_name=task, kwargs={}, max_retries=max_retries,
                           timeout=settings.timeout_for(queue))
    fields = new.fields(full, user, format_time())
    prefix = json.dumps([task, None, [], {key_name: key_value}], separators=(",", ":"))[:-2]  # open the kwargs
    return json.dumps({"id": job_id, "key": keys.job(job_id), "list": keys.queue(full), "wake": keys.wake(full),
                       "counters": keys.queue_counters(queue), "task": task, "queue": queue, "user": user,
                       "why": why, "prefix": prefix, "fields": fields}, separators=(",", ":"))


@dataclass(frozen=True)
class Hooks:
    """The workflow options of one enqueue, checked."""

    depends_on: list[str] = field(default_factory=list)
    policy: str = "cancel"
    on_success: tuple[str, str] | None = None  # (queue, task)
    on_failure: tuple[str, str] | None = None

    def __bool__(self) -> bool:
        return bool(self.depends_on or self.on_success or self.on_failure)

    def fields(self, job_id: str, user: str | None) -> list[Any]:
        """The hash fields a job with these hooks carries (its callbacks, made ready now)."""
        out: list[Any] = []
        if self.on_success:
            out += ["fk_on_success", callback_spec(*self.on_success, "parent_id", job_id, user, f"on_success of {job_id}")]
        if self.on_failure:
            out += ["fk_on_failure", callback_spec(*self.on_failure, "parent_id", job_id, user, f"on_failure of {job_id}")]
        if out:
            out += ["fk_hooks", "1"]
        return out


def check_hooks(queue: str, depends_on: Any = None, on_dependency_failure: Any = "cancel", on_success: Any = None,
                on_failure: Any = None) -> Hooks:
    """Validate workflow options; a clear :class:`~core.errors.JobsError` naming what is accepted."""
    deps: list[str] = []
    if depends_on is not None:
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        if not isinstance(depends_on, list | tuple) or not depends_on or len(depends_on) > MAX_DEPENDENCIES:
            raise InvalidPayloadError(f"depends_on must be a job id or a list of 1 to {MAX_DEPENDENCIES} job ids")
        deps = list(dict.fromkeys(validate_job_id(d) for d in depends_on))
    if on_dependency_failure not in DEPENDENCY_POLICIES:
        raise InvalidPayloadError(f"on_dependency_failure {str(on_dependency_failure)[:40]!r} is not accepted; "
                                  f"accepted: {', '.join(DEPENDENCY_POLICIES)}")
    hooks = Hooks(
        depends_on=deps, policy=on_dependency_failure,
        on_success=resolve_task(on_success, queue, "on_success") if on_success is not None else None,
        on_failure=resolve_task(on_failure, queue, "on_failure") if on_failure is not None else None,
    )
    if hooks and not redis_available():
        raise QueueUnavailableError("depends_on, on_success and on_failure need Redis, which is unreachable now; "
                                    "try again in a moment")
    return hooks


# --- chains ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One step of a :func:`chain`: a registered task, its payload and enqueue options."""

    task: str
    payload: dict[str, Any] | None = None
    queue: str = "email"
    options: dict[str, Any] = field(default_factory=dict)


def chain(steps: list[Step], user_id: str | int | None = None) -> list[str]:
    """Run ``steps`` in order: each starts when the previous one completed, with its result as the
    payload key ``previous``. A step that fails (after its retries) or is canceled cancels the rest,
    each with the reason. Returns the job ids, first step first.

    Every step is checked (queue, task, payload, options) before any is written, so a bad step k
    leaves no steps 1..k-1 running on their own; the error names the step. Like the other
    workflow options a chain needs Redis: with Redis down it answers 503 and spools nothing."""
    if not isinstance(steps, list | tuple) or not steps or not all(isinstance(s, Step) for s in steps):
        raise InvalidPayloadError("chain takes a non-empty list of core.workflows.Step")
    from core.redis_queues import get_queue

    planned = []
    for index, step in enumerate(steps):
        try:
            queue = get_queue(step.queue)
            _check_step(queue, step, index, user_id)
            planned.append((queue, step))
        except JobsError as exc:  # the same error, naming the step
            exc.message = f"chain step {index} ({str(step.task)[:80]}): {exc.message}"
            exc.args = (exc.message,)
            raise
    if not redis_available():
        raise QueueUnavailableError("a chain needs Redis, which is unreachable now; nothing was written, "
                                    "try again in a moment")
    ids: list[str] = []
    for queue, step in planned:
        hooks = check_hooks(queue.short_name, depends_on=[ids[-1]] if ids else None)
        try:
            ids.append(queue._enqueue_one(step.task, step.payload, hooks, PREVIOUS if ids else None,
                                          allow_fallback=False, user_id=user_id, **step.options))
        except QueueUnavailableError as exc:
            written = f"; steps already written (they will run, cancel them if unwanted): {', '.join(ids)}" if ids else ""
            raise QueueUnavailableError(f"{exc.message}{written}") from exc
    logger.info("chain of %d steps: %s", len(ids), " -> ".join(ids))
    return ids


_STEP_OPTIONS = ("max_retries", "priority", "timeout", "job_id", "unique_for", "unique_key", "rate_limit",
                 "rate_key", "concurrency", "concurrency_key")  # delay/at: a step runs when the previous ends


def _check_step(queue: Any, step: Step, index: int, user_id: Any) -> None:
    """Raise what an enqueue of the step on ``queue`` would (nothing is written)."""
    unknown = sorted(set(step.options) - set(_STEP_OPTIONS))
    if unknown:
        raise InvalidPayloadError(f"option(s) {', '.join(map(repr, unknown))} not accepted in a chain step; "
                                  f"accepted: {', '.join(_STEP_OPTIONS)}")
    if index and PREVIOUS in (step.payload or {}):
        raise InvalidPayloadError(f"payload key {PREVIOUS!r} is taken: it carries the previous step's result")
    queue.check_enqueue(step.task, step.payload, user_id=user_id, **step.options)


# --- batches ----------------------------------------------------------------------------------------
def enqueue_batch(queue: str, task: str, payloads: list[dict[str, Any]], on_complete: str | None = None,
                  user_id: str | int | None = None, **options: Any) -> str:
    """Queue ``task`` once per payload as one batch; returns the batch id.

    ``on_complete`` (a registered task) runs exactly once, when every member has ended, with
    ``batch_id``, ``total``, ``completed`` (succeeded) and ``failed`` (DESIGN.md's words; canceled
    members are ``total - completed - failed``). Exactly once also when two workers
    end the last two members at the same instant (each end is one script) and when a worker is
    SIGKILLed between them (a lost attempt is retried, and only final ends count)."""
    from core.redis_queues import get_queue

    if not isinstance(payloads, list) or not 1 <= len(payloads) <= MAX_BATCH:
        raise InvalidPayloadError(f"a batch takes a list of 1 to {MAX_BATCH} payloads")
    target = get_queue(queue)
    callback = resolve_task(on_complete, target.short_name, "on_complete") if on_complete is not None else None
    user = validate_user_id(user_id)
    batch_id = uuid.uuid4().hex
    fields: list[Any] = ["total", len(payloads), "completed", 0, "failed", 0, "canceled", 0, "task", task,
                         "queue", target.short_name, "created_at", format_time(), "ttl", get_settings().result_ttl]
    if user is not None:
        fields += ["user", user]
    if callback is not None:
        fields += ["on_complete", callback_spec(*callback, "batch_id", batch_id, user, f"on_complete of batch {batch_id}")]
    if not redis_available():
        raise QueueUnavailableError("a batch needs Redis, which is unreachable now; try again in a moment")
    target._enqueue_many(task, payloads, {"id": batch_id, "key": keys.batch(batch_id), "fields": fields},
                         user_id=user_id, **options)
    logger.info("batch %s: %d %s job(s) on %s%s", batch_id, len(payloads), task, target.short_name,
                f", then {callback[1]}" if callback else "")
    return batch_id


def batch_job_ids(batch_id: str, start: int = 0, count: int = 100) -> list[str]:
    """Member ids of a batch in enqueue order (a bounded range read)."""
    validate_job_id(batch_id)
    return [i.decode() for i in get_redis().lrange(keys.batch_jobs(batch_id), start, start + count - 1)]


def get_batch(batch_id: str) -> dict[str, Any]:
    """A batch's progress: total, completed, failed, canceled, pending, done, callback_job_id."""
    validate_job_id(batch_id)
    raw = get_redis().hgetall(keys.batch(batch_id))
    if not raw:
        raise JobNotFoundError(f"batch {batch_id} does not exist (or ended more than JOBS_RESULT_TTL ago)")
    data = {k.decode(): v.decode() for k, v in raw.items()}
    total, counts = int(data["total"]), {name: int(data.get(name, 0)) for name in ("completed", "failed", "canceled")}
    ended = sum(counts.values())
    return {"batch_id": batch_id, "task": data.get("task"), "queue": data.get("queue"), "user_id": data.get("user"),
            "total": total, **counts, "pending": total - ended, "done": ended >= total,
            "callback_job_id": data.get("callback_id") or None, "created_at": data.get("created_at"),
            "ended_at": data.get("ended_at")}
