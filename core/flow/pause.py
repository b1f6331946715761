"""Pausing and resuming a queue: workers take no new jobs from a paused queue; running ones finish.

The paused set lives in Redis (``fikiri:paused``), so a pause survives worker restarts and holds
for every worker on every host at once: ``claim.lua`` skips the paused queues in the same step
that pops. Enqueue still accepts jobs (they wait, pending). Resuming wakes an idle worker.
"""

from __future__ import annotations

import logging

from core.config import QUEUE_NAMES, get_settings
from core.errors import UnknownQueueError
from core.platform import keys
from core.platform.connection import get_redis

logger = logging.getLogger(__name__)


def _full(queue_short: str) -> str:
    if queue_short not in QUEUE_NAMES:
        raise UnknownQueueError(f"unknown queue {str(queue_short)[:40]!r}; accepted: {', '.join(QUEUE_NAMES)}")
    return get_settings().full_queue_name(queue_short)


def pause(queue_short: str) -> bool:
    """Pause a queue; True if it was running until now."""
    changed = bool(get_redis().sadd(keys.paused_queues(), _full(queue_short)))
    if changed:
        logger.warning("queue %s paused: workers take no new jobs from it until it is resumed", queue_short)
    return changed


def resume(queue_short: str) -> bool:
    """Resume a paused queue and wake a worker for its pending jobs; True if it was paused."""
    full = _full(queue_short)
    connection = get_redis()
    with connection.pipeline(transaction=True) as pipe:
        pipe.srem(keys.paused_queues(), full)
        pipe.lpush(keys.wake(full), "1")
        pipe.ltrim(keys.wake(full), 0, 0)  # still at most one token
        changed = bool(pipe.execute()[0])
    if changed:
        logger.warning("queue %s resumed", queue_short)
    return changed


def is_paused(queue_short: str) -> bool:
    return bool(get_redis().sismember(keys.paused_queues(), _full(queue_short)))


def paused_queues() -> list[str]:
    """Short names of the paused queues."""
    members = {m.decode() for m in get_redis().smembers(keys.paused_queues())}
    return [q for q in QUEUE_NAMES if get_settings().full_queue_name(q) in members]
