"""Batches: one task over many payloads, with a callback that runs exactly once when every member
has ended, and their progress. The members are enqueued in one script call; the counts and the
callback live in ``fikiri:batch:<id>`` and are kept by the lifecycle scripts (hooks_lib.lua).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from core.config import get_settings
from core.errors import InvalidPayloadError, JobNotFoundError, QueueUnavailableError
from core.platform import keys
from core.platform.connection import get_redis, redis_available
from core.queue.hooks import callback_spec, resolve_task
from core.queue.job_options import validate_job_id, validate_user_id
from core.queue.rq_compat import format_time

if TYPE_CHECKING:
    from core.api.queues import RedisQueue

logger = logging.getLogger(__name__)

MAX_BATCH = 10_000


def enqueue_batch(target: RedisQueue, task: str, payloads: list[dict[str, Any]], on_complete: str | None = None,
                  user_id: str | int | None = None, **options: Any) -> str:
    """Queue ``task`` once per payload on ``target`` as one batch; returns the batch id.

    ``on_complete`` (a registered task) runs exactly once, when every member has ended, with
    ``batch_id``, ``total``, ``completed`` (succeeded) and ``failed`` (DESIGN.md's words; canceled
    members are ``total - completed - failed``). Exactly once also when two workers
    end the last two members at the same instant (each end is one script) and when a worker is
    SIGKILLed between them (a lost attempt is retried, and only final ends count)."""
    if not isinstance(payloads, list) or not 1 <= len(payloads) <= MAX_BATCH:
        raise InvalidPayloadError(f"a batch takes a list of 1 to {MAX_BATCH} payloads")
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
