"""``wait_for(job_id, timeout)``: block until a job has ended, woken by the end itself.

Every end of an attempt a worker writes (finish.lua, fail.lua, abandon.lua; the hand-back's
import.lua) appends RQ's result record to ``rq:results:<id>`` in the same script as the status,
so the wait is one snapshot (the stream's last entry id, then the job's fields, pipelined: see
:func:`_snapshot` for why that order needs no MULTI) then ``XREAD BLOCK`` on that stream from that id: an end after the snapshot adds a newer entry and
wakes the read at once (measured in bench/wait_latency.py: within about a millisecond of the
end), an end before it is in the snapshot. No thread sleeps in steps and no write is needed.

Why not a per-job done token (the old ``fikiri:done:<id>``, gone with issue 22): the claim read
a waiter mark written by the wait, so a wait that started after the claim (a worker at idle
claims within a fraction of a millisecond of the enqueue) never got a token; that is how the
old wait slept to its one-second re-read (1,004 ms at p50 in issue 22).

Ends that write no result record are those of a job that never started: a cancel, an expiry, a
dependency's failure, a delete. While the job is not running the read is re-issued every
:data:`PENDING_RECHECK` seconds to see them; while it runs, every :data:`BLOCK_MAX` seconds.
A fallback job (``mode == "fallback"``) wakes on this process's runner ending an attempt and
re-reads the spool at least every :data:`FALLBACK_RECHECK` seconds (another process's runner).

A lost connection (REDIS_DOWN) is retried every :data:`DOWN_RETRY` seconds until the deadline, then
raises :class:`~core.errors.QueueUnavailableError` (503): the job is not lost, its state is just
unknown. Any other Redis failure raises :class:`~core.errors.JobsInternalError` (500).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from core.errors import InvalidPayloadError, JobNotFoundError, QueueUnavailableError
from core.fallback.executor import get_fallback
from core.platform import keys
from core.platform.connection import (
    BLOCK_MAX,
    get_blocking_redis,
    internal_errors,
    is_redis_down,
    mark_redis_down,
    redis_description,
)
from core.queue.job_model import READ_FIELDS, Job, JobStatus, job_from_fields, set_waiter
from core.queue.job_options import validate_job_id

logger = logging.getLogger(__name__)

PENDING_RECHECK = 1.0  # s: re-read a job that has not started (ends of a waiting job write no record)
FALLBACK_RECHECK = 0.05  # s: re-read a spooled job (another process's runner may end it)
DOWN_RETRY = 0.1  # s between reads while Redis is unreachable


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout < 0:
        raise InvalidPayloadError(f"wait_for timeout {timeout!r} is not usable: accepted is a finite number of "
                                  f"seconds >= 0")
    return float(timeout)


def _snapshot(connection: Any, job_id: str) -> tuple[Job | None, bytes]:
    """The job and the id of its newest result record (``0-0`` when none), in one round trip.

    The record's id is read first, the job second: an end before the first read shows in the
    job; one between the reads shows in the job too; one after both adds a newer record, which
    wakes the XREAD at once. So no MULTI is needed (and the two keys may sit on different
    cluster slots)."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.xrevrange(keys.results(job_id), count=1)
        pipe.hmget(keys.job(job_id), READ_FIELDS)
        newest, values = pipe.execute()
    return job_from_fields(job_id, values), (newest[0][0] if newest else b"0-0")


def wait_for(job_id: str, timeout: float) -> Job:
    """Block until the job has ended (completed, failed, canceled or expired) and return it.

    Raises :class:`TimeoutError` when it is still going at ``timeout`` seconds,
    :class:`~core.errors.JobNotFoundError` when there is no such job (or it was deleted meanwhile),
    :class:`~core.errors.QueueUnavailableError` when Redis was unreachable up to the deadline.
    Holds one pooled connection while blocked; many concurrent waits each hold one.
    """
    validate_job_id(job_id)
    deadline = time.monotonic() + _check_timeout(timeout)
    fallback = get_fallback()
    down_since: float | None = None
    while True:
        seen_ends = fallback.ends
        spooled = fallback.get(job_id)
        if spooled is not None:
            if spooled.status.is_final:
                return spooled
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} is still {spooled.status.value} after {timeout}s")
            fallback.wait_for_an_end(seen_ends, min(FALLBACK_RECHECK, remaining))
            continue
        try:
            with internal_errors(f"wait for job {job_id}"):
                connection = get_blocking_redis()
                job, newest = _snapshot(connection, job_id)
                down_since = None
                if job is None:
                    raise JobNotFoundError(f"Job {job_id} does not exist")
                if job.status.is_final:
                    return job
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    cap = BLOCK_MAX if job.status == JobStatus.RUNNING else PENDING_RECHECK
                    block_ms = max(1, math.ceil(min(remaining, cap) * 1000))
                    connection.xread({keys.results(job_id): newest}, count=1, block=block_ms)
                    continue
            raise TimeoutError(f"job {job_id} is still {job.status.value} after {timeout}s")
        except Exception as exc:
            if not is_redis_down(exc):
                raise
            mark_redis_down()
            down_since = down_since or time.monotonic()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QueueUnavailableError(
                    f"could not tell whether job {job_id} has ended: Redis at {redis_description()} has been "
                    f"unreachable for {time.monotonic() - down_since:.1f}s of the {timeout}s wait; the job is "
                    f"not lost, ask again when Redis is back") from exc
            time.sleep(min(DOWN_RETRY, remaining))


set_waiter(wait_for)  # Job.wait (core.queue cannot import this layer)
