"""Workflow options of one enqueue, checked and encoded as job fields: ``depends_on``,
``on_dependency_failure``, ``on_success`` and ``on_failure``, and the callback jobs that
``core/queue/lua/hooks_lib.lua`` creates when the time comes.

Everything here is decided inside the lifecycle scripts, in the same atomic step as the job end
that triggers it, so a SIGKILL or two workers finishing at the same instant can neither lose nor
repeat a step. The chains and batches built on these live in :mod:`core.workflows` and
:mod:`core.api.batches`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.config import QUEUE_NAMES, get_settings
from core.errors import InvalidPayloadError, QueueUnavailableError, UnknownTaskError
from core.platform import keys
from core.platform.connection import redis_available
from core.queue import lifecycle, task_registry
from core.queue.job_options import validate_job_id
from core.queue.rq_compat import format_time

DEPENDENCY_POLICIES = ("cancel", "run")
MAX_DEPENDENCIES = 100


# --- callbacks -------------------------------------------------------------------------------------
def resolve_task(target: Any, default_queue: str, what: str) -> tuple[str, str]:
    """``"task"`` (on ``default_queue``) or ``"queue:task"`` -> (queue, task), checked registered."""
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
    spec = task_registry.get(queue, task)
    settings = get_settings()
    full = settings.full_queue_name(queue)
    job_id = uuid.uuid4().hex
    max_retries = spec.max_retries if spec and spec.max_retries is not None else settings.default_max_retries
    new = lifecycle.NewJob(job_id=job_id, task_name=task, kwargs={}, max_retries=max_retries,
                           timeout=settings.timeout_for(queue), retry_policy=spec.retry.to_field() if spec else None)
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


