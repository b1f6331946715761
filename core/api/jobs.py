"""Job operations the API, dashboard and CLI share: read, page through a state, cancel, retry, delete.

Reads are bounded (one HMGET per job, pipelined; pages are registry ranges), never KEYS/SCAN.
Every change goes through :mod:`core.queue.lifecycle`; nothing here writes a job key itself.
"""

from __future__ import annotations

import logging
from typing import Any

from core.api.waiting import wait_for  # noqa: F401  (re-exported: core.api.jobs.wait_for)
from core.config import QUEUE_NAMES, get_settings
from core.errors import InvalidJobStateError, JobNotFoundError, UnknownQueueError
from core.fallback.executor import get_fallback
from core.platform import keys
from core.platform.connection import REDIS_DOWN, get_redis, mark_redis_down, redis_available
from core.queue import groups, lifecycle
from core.queue.job_model import READ_FIELDS, Job, job_from_fields
from core.queue.job_options import validate_job_id, validate_user_id

logger = logging.getLogger(__name__)


STATES = ("pending", "delayed", "running", "completed", "failed", "canceled")


def fetch_jobs(job_ids: list[str], connection: Any = None) -> list[Job]:
    """Jobs by id in the given order, skipping ids whose job is gone (one round trip)."""
    if not job_ids:
        return []
    connection = connection or get_redis()
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), READ_FIELDS)
        replies = pipe.execute()
    jobs = (job_from_fields(job_id, values) for job_id, values in zip(job_ids, replies))
    return [job for job in jobs if job is not None]


def get_job(job_id: str) -> Job | None:
    """A job by id: the fallback's memory first, then Redis (one HMGET)."""
    validate_job_id(job_id)
    fallback_job = get_fallback().get(job_id)
    if fallback_job is not None:
        return fallback_job
    jobs = fetch_jobs([job_id])
    return jobs[0] if jobs else None


def must_get(job_id: str) -> Job:
    job = get_job(job_id)
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist")
    return job


def get_user_jobs(user_id: str | int, limit: int = 20) -> list[Job]:
    """A user's newest jobs first (the bounded per-user index, plus any fallback jobs)."""
    user = validate_user_id(user_id)
    assert user is not None
    jobs: list[Job] = []
    if redis_available():
        try:
            ids = [i.decode() for i in get_redis().lrange(keys.user_jobs(user), 0, limit - 1)]
            jobs = fetch_jobs(list(dict.fromkeys(ids)))
        except REDIS_DOWN:
            mark_redis_down()
    jobs.extend(get_fallback().jobs_for_user(user, limit))
    jobs.sort(key=lambda j: j.created_at or 0, reverse=True)
    return jobs[:limit]


def _full_queue_of(job_id: str) -> str:
    """The full name of the queue holding ``job_id``, or a not-found error."""
    origin = get_redis().hget(keys.job(job_id), "origin")
    if origin is None:
        raise JobNotFoundError(f"Job {job_id} does not exist")
    return origin.decode()


def cancel_job(job_id: str, reason: str = "canceled") -> Job:
    """Cancel a pending, delayed or retrying job; a job already claimed by a worker is a conflict."""
    validate_job_id(job_id)
    fallback_job, canceled = get_fallback().cancel(job_id, reason)
    if fallback_job is not None:
        if not canceled:
            raise InvalidJobStateError(
                f"job {job_id} is {fallback_job.status.value}; only pending or delayed jobs can be canceled")
        return fallback_job
    ok, status = lifecycle.cancel(get_redis(), job_id, _full_queue_of(job_id), reason)
    if not ok:
        current = must_get(job_id)
        raise InvalidJobStateError(
            f"job {job_id} is {current.status.value}; only pending, delayed or retrying jobs can be canceled")
    return must_get(job_id)


def stop_job(job_id: str, by: str = "an operator") -> Job:
    """Stop a job: a running one is ended by its worker, a pending or delayed one is canceled.

    Either way it ends ``canceled`` with "stopped by <by>" and is not retried. The worker sees the
    request at its next heartbeat (JOBS_WORKER_HEARTBEAT_INTERVAL); a prefork or fork worker
    ends the work-horse, a simple or threaded one sets :func:`core.execution.progress.should_stop` and ends
    the job JOBS_STOP_GRACE seconds later if it has not returned. Returns the job as it is now
    (a running job is still ``running``, with ``reason`` "stopping: ...", until its worker acts).
    """
    validate_job_id(job_id)
    reason = f"stopped by {by}"
    fallback_job, canceled = get_fallback().cancel(job_id, reason)  # a spooled job that has not started
    if fallback_job is not None:
        if not canceled:
            raise InvalidJobStateError(f"job {job_id} is {fallback_job.status.value} in the in-process fallback "
                                       f"(Redis was down); there a job can be stopped only before it starts")
        return fallback_job
    for _attempt in range(3):  # a pending job may be claimed between the two checks: look again
        ok, status, _worker = lifecycle.stop_running(get_redis(), job_id, reason)
        if ok:
            return must_get(job_id)
        if not status:
            raise JobNotFoundError(f"Job {job_id} does not exist")
        if status not in ("queued", "scheduled", "deferred"):
            current = must_get(job_id)
            raise InvalidJobStateError(f"job {job_id} is {current.status.value}; only running, pending or delayed "
                                       f"jobs can be stopped")
        canceled, _status = lifecycle.cancel(get_redis(), job_id, _full_queue_of(job_id), reason)
        if canceled:
            return must_get(job_id)
    raise InvalidJobStateError(f"job {job_id} kept changing state; try again")


def retry_job(job_id: str) -> Job:
    """Requeue a failed job for one more attempt."""
    validate_job_id(job_id)
    ok, _status = lifecycle.requeue_failed(get_redis(), job_id, _full_queue_of(job_id))
    if not ok:
        current = must_get(job_id)
        raise InvalidJobStateError(f"job {job_id} is {current.status.value}; only failed jobs can be retried")
    return must_get(job_id)


def delete_job(job_id: str) -> None:
    """Delete a job that is not running (its hash, result and registry entries)."""
    validate_job_id(job_id)
    ok, status = lifecycle.delete(get_redis(), job_id, _full_queue_of(job_id))
    if not ok:
        if status == "started":
            raise InvalidJobStateError(f"job {job_id} is running; cancel or wait for it before deleting")
        raise JobNotFoundError(f"Job {job_id} does not exist")


def _state_key(full_queue: str, state: str) -> str:
    return {
        "pending": keys.queue(full_queue), "delayed": keys.scheduled(full_queue),
        "running": keys.started(full_queue), "completed": keys.finished(full_queue),
        "failed": keys.failed(full_queue), "canceled": keys.canceled(full_queue),
    }[state]


def page_ids(queue_short: str, state: str, start: int, count: int) -> tuple[list[str], int]:
    """Ids of a queue's jobs in ``state`` (newest first for ended states), and how many there are."""
    if queue_short not in QUEUE_NAMES:
        raise UnknownQueueError(f"unknown queue {queue_short!r}; accepted: {', '.join(QUEUE_NAMES)}")
    if state not in STATES:
        raise UnknownQueueError(f"unknown state {state!r}; accepted: {', '.join(STATES)}")
    full = get_settings().full_queue_name(queue_short)
    key = _state_key(full, state)
    connection = get_redis()
    end = start + count - 1
    if state == "pending":
        return _page_pending(connection, full, start, count)
    with connection.pipeline(transaction=False) as pipe:
        if state in ("delayed", "running"):
            pipe.zrange(key, start, end)
            pipe.zcard(key)
        else:
            pipe.zrevrange(key, start, end)
            pipe.zcard(key)
        raw, total = pipe.execute()
    ids = [i.decode() for i in raw]
    if state == "running":
        ids = [i.rsplit(":", 1)[0] for i in ids]
    return ids, int(total)


def _page_pending(connection: Any, full: str, start: int, count: int) -> tuple[list[str], int]:
    """Pending ids: the queue's own lists in the order workers take them (high, normal, low), then
    the job groups' waiting lists (core.queue.groups.waiting_lists), so every pending job is listed."""
    lists = keys.queue_lists(full) + groups.waiting_lists(connection, full)
    with connection.pipeline(transaction=False) as pipe:
        for key in lists:
            pipe.llen(key)
        lengths = pipe.execute()
    ids: list[str] = []
    offset = start
    for key, length in zip(lists, lengths):
        if len(ids) >= count:
            break
        if offset >= length:
            offset -= length
            continue
        want = count - len(ids)
        ids += [i.decode() for i in connection.lrange(key, offset, offset + want - 1)]
        offset = 0
    return ids, int(sum(lengths))


def page_jobs(queue_short: str, state: str, start: int = 0, count: int = 20) -> tuple[list[Job], int]:
    ids, total = page_ids(queue_short, state, start, count)
    return fetch_jobs(ids), total
