"""The public view of a job: :class:`Job` and :class:`JobStatus`, whichever engine ran it.

The job hash (RQ's layout plus our ``fk_*`` fields, see :mod:`core.queue.lifecycle`) is the source of
truth for Redis jobs; :func:`job_from_fields` maps it onto this shape in one HMGET, no result
stream read. Fallback jobs build the same dataclass directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from core.queue.backoff import DEFAULT_POLICY, RetryPolicy
from core.queue.rq_compat import decode_data, parse_time


class JobStatus(str, Enum):
    PENDING = "pending"
    DELAYED = "delayed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELED = "canceled"
    EXPIRED = "expired"  # not started before its ``expires``: ended without running (stored as RQ's canceled)

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED)


@dataclass
class Job:
    job_id: str
    queue: str
    task_name: str
    status: JobStatus
    payload: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    retry_count: int = 0
    max_retries: int = 0
    progress: Any = None
    user_id: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    mode: str = "redis"
    priority: str = "normal"
    # why a delayed job waits ("rate limited: ai provider 60/min", "retry after 2s: ..."), or that a
    # running job was asked to stop ("stopping: stopped by alice")
    reason: str | None = None
    deferrals: int = 0  # times it was rescheduled by RetryAfter (not failures)
    stalls: int = 0  # attempts lost to a crash (its worker died, its lease expired): they use no retry
    batch_id: str | None = None  # the batch it is a member of (core.api.batches.enqueue_batch)
    expires_at: float | None = None  # epoch s: not started by then, it ends expired and never runs
    # how a failure waits and which failures retry: {"backoff": [base, cap] | None, "delays": [...] | None,
    # "jitter": "full" | "none", "retry_on": [names], "dont_retry_on": [names]} (core.queue.backoff)
    retry_policy: dict[str, Any] | None = None
    group: str | None = None  # its job group (core.queue.groups): served round-robin with the others

    def wait(self, timeout: float) -> Job:
        """Block until this job has ended and return it (:func:`core.api.waiting.wait_for`, which
        registers itself here: this layer cannot import the API that reads the fallback too)."""
        if _waiter is None:
            raise RuntimeError("Job.wait needs core.api (import core.redis_queues first)")
        return _waiter(self.job_id, timeout)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


_waiter: Callable[[str, float], Job] | None = None


def set_waiter(waiter: Callable[[str, float], Job]) -> None:
    """How :meth:`Job.wait` waits: :func:`core.api.waiting.wait_for` sets itself at import."""
    global _waiter
    _waiter = waiter


_STATUS = {
    "queued": JobStatus.PENDING, "created": JobStatus.PENDING, "deferred": JobStatus.PENDING,
    "scheduled": JobStatus.DELAYED, "started": JobStatus.RUNNING, "finished": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED, "canceled": JobStatus.CANCELED, "stopped": JobStatus.CANCELED,
}

# Fields a status read needs (HMGET, not HGETALL: a job hash also carries RQ fields we never show).
READ_FIELDS = ("status", "data", "origin", "created_at", "started_at", "ended_at", "fk_task", "fk_max",
               "fk_retries", "fk_manual", "fk_user", "fk_result", "fk_error", "fk_progress", "meta", "fk_mode",
               "fk_prio", "fk_reason", "fk_stop", "fk_deferrals", "fk_batch", "fk_expires", "fk_expired",
               "fk_retry", "fk_stalls", "fk_group", "fk_claimed", "worker_name")


def map_status(rq_status: str | None, retry_count: int) -> JobStatus:
    """The hash's status onto ours. A pending or delayed job that already failed once is retrying."""
    status = _STATUS.get(rq_status or "queued", JobStatus.CANCELED)
    if status in (JobStatus.PENDING, JobStatus.DELAYED) and retry_count:
        return JobStatus.RETRYING
    return status


def _json(raw: bytes | None, default: Any = None) -> Any:
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def job_from_fields(job_id: str, values: list[bytes | None]) -> Job | None:
    """Our :class:`Job` from the :data:`READ_FIELDS` of a job hash (None when the hash is gone)."""
    raw = dict(zip(READ_FIELDS, values))
    if raw["data"] is None and raw["status"] is None:
        return None
    meta = _json(raw["meta"], {}) or {}
    if not isinstance(meta, dict):
        meta = {}
    try:
        task_name, payload = decode_data(raw["data"])
    except Exception:  # written by something else: show the job, not a 500
        task_name, payload = (raw["fk_task"] or b"<undecodable>").decode(errors="replace"), {}
    max_retries = int(raw["fk_max"] or meta.get("max_retries", 0) or 0)
    retry_count = int(raw["fk_retries"] or 0) + int(raw["fk_manual"] or 0)
    status = map_status(raw["status"].decode() if raw["status"] else None, retry_count)
    if status == JobStatus.CANCELED and raw["fk_expired"]:  # RQ's tools read "canceled"; we say why
        status = JobStatus.EXPIRED
    claimed_by = None
    if status == JobStatus.RUNNING and raw["fk_claimed"] == b"1":
        # claimed ahead by a worker's prefetch and not begun: RQ's tools see it started (it is in RQ's
        # started registry under the worker's lease); it has not run, so ours says pending, and why
        status = JobStatus.RETRYING if retry_count else JobStatus.PENDING
        worker = raw["worker_name"].decode(errors="replace") if raw["worker_name"] else "a worker"
        claimed_by = f"claimed by {worker}; starts when one of its slots frees (stop it to take it back)"
    error = raw["fk_error"].decode(errors="replace") if raw["fk_error"] else meta.get("error")
    progress = _json(raw["fk_progress"]) if raw["fk_progress"] is not None else meta.get("progress")
    user = raw["fk_user"].decode() if raw["fk_user"] else meta.get("user_id")
    origin = raw["origin"].decode() if raw["origin"] else ""
    return Job(
        job_id=job_id,
        queue=origin.rsplit(":", 1)[-1],
        task_name=task_name,
        status=status,
        payload=payload,
        result=_json(raw["fk_result"]) if status == JobStatus.COMPLETED else None,
        error=None if status == JobStatus.COMPLETED else error,
        retry_count=retry_count,
        max_retries=max_retries,
        progress=progress,
        user_id=user,
        created_at=parse_time(raw["created_at"]),
        started_at=parse_time(raw["started_at"]),
        completed_at=parse_time(raw["ended_at"]) if status.is_final else None,
        mode=raw["fk_mode"].decode() if raw["fk_mode"] else "redis",  # "fallback": ran there, handed back
        priority=raw["fk_prio"].decode() if raw["fk_prio"] else "normal",
        reason=claimed_by or _reason(status, raw["fk_reason"], raw["fk_stop"]),
        deferrals=int(raw["fk_deferrals"] or 0),
        batch_id=raw["fk_batch"].decode() if raw["fk_batch"] else None,
        expires_at=float(raw["fk_expires"]) if raw["fk_expires"] else None,
        retry_policy=policy_view(raw["fk_retry"]),
        stalls=int(raw["fk_stalls"] or 0),
        group=raw["fk_group"].decode() if raw["fk_group"] else None,
    )


def policy_view(stored: str | bytes | None) -> dict[str, Any]:
    """A job's effective retry policy for display, from its ``fk_retry`` (absent: the default)."""
    return (RetryPolicy.from_field(stored) or DEFAULT_POLICY).describe()


def _reason(status: JobStatus, waiting: bytes | None, stop: bytes | None) -> str | None:
    if status == JobStatus.RUNNING and stop:
        return f"stopping: {stop.decode(errors='replace')}"
    if status in (JobStatus.DELAYED, JobStatus.RETRYING) and waiting:
        return waiting.decode(errors="replace")
    return None
