"""Names of the Redis keys Fikiri Jobs owns (RQ's own keys keep RQ's names).

Every key here is bounded: lists are trimmed, hashes are per queue or per task, and per-user
or per-job keys expire. The README's "Redis keys" section documents the same list.
"""

from __future__ import annotations

from core.config import get_settings


def _p() -> str:
    return get_settings().queue_prefix


def user_jobs(user_id: str) -> str:
    """LIST of job ids, newest first, trimmed to JOBS_USER_INDEX_SIZE, expiring."""
    return f"{_p()}:user:{user_id}:jobs"


def queue_counters(queue_short: str) -> str:
    """HASH of lifetime counters for a queue: enqueued, completed, failed, retried, canceled."""
    return f"{_p()}:stats:{queue_short}"



def users_with_jobs() -> str:
    """SET of user ids that have a job index; lets the nightly cleanup walk the indexes without SCAN."""
    return f"{_p()}:users"
