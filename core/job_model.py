"""The public view of a job: :class:`Job` and :class:`JobStatus`, whichever engine ran it.

RQ's job hash is the source of truth for Redis jobs; :func:`job_from_rq` maps it onto this
shape. Fallback jobs build the same dataclass directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from redis import Redis
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.results import Result


class JobStatus(str, Enum):
    PENDING = "pending"
    DELAYED = "delayed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def map_status(rq_status: RQStatus | None, retry_count: int) -> JobStatus:
    """RQ's statuses onto ours. A queued or scheduled job that already failed once is retrying."""
    if rq_status in (RQStatus.QUEUED, RQStatus.CREATED, RQStatus.DEFERRED, None):
        return JobStatus.RETRYING if retry_count else JobStatus.PENDING
    if rq_status == RQStatus.SCHEDULED:
        return JobStatus.RETRYING if retry_count else JobStatus.DELAYED
    if rq_status == RQStatus.STARTED:
        return JobStatus.RUNNING
    if rq_status == RQStatus.FINISHED:
        return JobStatus.COMPLETED
    if rq_status == RQStatus.FAILED:
        return JobStatus.FAILED
    return JobStatus.CANCELED  # CANCELED, STOPPED


def needs_result(rq_job: RQJob) -> bool:
    """Whether the job's latest RQ Result (return value or error) is worth fetching."""
    return rq_job.get_status(refresh=False) in (
        RQStatus.FINISHED, RQStatus.FAILED, RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.STOPPED
    )


def fetch_latest_results(connection: Redis, rq_jobs: list[RQJob]) -> dict[str, Result]:
    """The latest Result of each job that has one, in one pipelined round trip."""
    wanted = [job for job in rq_jobs if needs_result(job)]
    if not wanted:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for job in wanted:
            pipe.xrevrange(Result.get_key(job.id), "+", "-", count=1)
        replies = pipe.execute()
    results: dict[str, Result] = {}
    for job, reply in zip(wanted, replies):
        if reply:
            result_id, payload = reply[0]
            results[job.id] = Result.restore(
                job.id, result_id.decode(), payload, connection=connection, serializer=job.serializer
            )
    return results


def job_from_rq(rq_job: RQJob, queue_short: str, latest: Result | None = None) -> Job:
    """Build our :class:`Job` from a fetched RQ job and its latest Result (if fetched)."""
    meta = rq_job.meta or {}
    max_retries = int(meta.get("max_retries", 0))
    retries_left = rq_job.retries_left if rq_job.retries_left is not None else max_retries
    if meta.get("refused"):
        retries_left = max_retries  # refused before running: nothing was retried
    retry_count = max(0, max_retries - retries_left) + int(meta.get("manual_retries", 0))
    status = map_status(rq_job.get_status(refresh=False), retry_count)
    try:
        payload = rq_job.kwargs if isinstance(rq_job.kwargs, dict) else {}
        task_name = rq_job.func_name or ""
    except Exception:  # undecodable data written by something else: show the job, not a 500
        payload, task_name = {}, "<undecodable>"
    result, error = None, meta.get("error")
    if latest is not None:
        if latest.type == Result.Type.SUCCESSFUL and status == JobStatus.COMPLETED:
            result = latest.return_value
        elif latest.type in (Result.Type.FAILED, Result.Type.STOPPED) and error is None:
            error = latest.exc_string
    if status == JobStatus.COMPLETED:
        error = None
    return Job(
        job_id=rq_job.id,
        queue=queue_short,
        task_name=task_name,
        status=status,
        payload=payload,
        result=result,
        error=error,
        retry_count=retry_count,
        max_retries=max_retries,
        progress=meta.get("progress"),
        user_id=meta.get("user_id"),
        created_at=_epoch(rq_job.created_at),
        started_at=_epoch(rq_job.started_at),
        completed_at=_epoch(rq_job.ended_at) if status.is_final else None,
        mode="redis",
    )
