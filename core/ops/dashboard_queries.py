"""Read-only Redis queries behind the dashboard's workers page, search and throughput chart.

Kept apart from :mod:`core.api.jobs` (which also changes jobs) so the dashboard can grow its reads
without touching the lifecycle code. Every read here is bounded, never ``KEYS``/``SCAN``:

* workers: one ``SMEMBERS`` of ``rq:workers`` and one pipelined ``HGETALL`` per live worker;
* task search: the newest :data:`TASK_SCAN_PER_STATE` ids of each state (and pending priority
  list) of each queue, one ``HMGET`` each (pipelined), then a full read of at most ``limit``
  matches;
* throughput: 60 per-minute hashes (1 h) or 24 per-hour hashes (24 h), pipelined.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from core.api.jobs import fetch_jobs
from core.config import QUEUE_NAMES, get_settings
from core.platform import keys
from core.platform.connection import get_redis
from core.queue.job_model import Job
from core.queue.rq_compat import parse_time
from core.queue.task_metrics import minute_key

logger = logging.getLogger(__name__)

TASK_SCAN_PER_STATE = 500  # newest ids read per state and queue by a task search (3 x 8 lists x 500 = 12,000)
STATES = ("pending", "delayed", "running", "completed", "failed", "canceled")
# range name -> (bucket width in seconds, number of buckets)
THROUGHPUT_RANGES: dict[str, tuple[int, int]] = {"1h": (60, 60), "24h": (3600, 24)}


# --- workers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerInfo:
    """One live worker as its heartbeat last described it (``rq:worker:<name>``)."""

    name: str
    hostname: str
    pid: int | None
    state: str
    worker_class: str
    queues: list[str]
    birth: float | None
    last_heartbeat: float | None
    heartbeat_age: float | None
    current_job_ids: list[str]
    claimed: int
    jobs_done: int
    rss_kb: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _int_or_none(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isascii() and raw.isdigit() else None


def _short_queue(full_name: str) -> str:
    """``fikiri:email`` -> ``email``: the dashboard names queues by their short name everywhere."""
    return get_settings().short_queue_name(full_name)


def _worker_info(name: str, data: dict[str, str], now: float) -> WorkerInfo:
    beat = parse_time(data.get("last_heartbeat")) or parse_time(data.get("birth"))
    # The heartbeat's "processed" counts jobs claimed (the worker's --max-jobs budget), so the jobs
    # in hand are in it too; both fields come from the same heartbeat write.
    claimed = _int_or_none(data.get("processed")) or 0
    in_hand = _int_or_none(data.get("current_jobs")) or 0
    return WorkerInfo(
        name=name,
        hostname=data.get("hostname", ""),
        pid=_int_or_none(data.get("pid")),
        state=data.get("state", "unknown"),
        worker_class=data.get("worker_class", ""),
        queues=[_short_queue(q) for q in data.get("queues", "").split(",") if q],
        birth=parse_time(data.get("birth")),
        last_heartbeat=beat,
        heartbeat_age=max(0.0, now - beat) if beat else None,
        current_job_ids=[j for j in data.get("current_job_ids", "").split(",") if j],
        claimed=claimed,
        jobs_done=max(0, claimed - in_hand),
        rss_kb=_int_or_none(data.get("rss_kb")),
    )


def list_workers(now: float | None = None) -> list[WorkerInfo]:
    """Every registered worker whose hash still lives, by name.

    A worker in ``rq:workers`` whose hash has expired is a worker that died without unregistering;
    it is left out here (the workers' own sweep removes the name) rather than shown as live."""
    connection = get_redis()
    names = sorted({keys.worker_name(member) for member in connection.smembers(keys.workers())})
    if not names:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.worker(name))
        replies = pipe.execute()
    moment = time.time() if now is None else now
    workers = []
    for name, raw in zip(names, replies):
        if raw:
            data = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
            workers.append(_worker_info(name, data, moment))
    return workers


# --- search by task ---------------------------------------------------------------------------------
@dataclass
class TaskSearch:
    """Jobs of one task among the newest ids of every state; ``complete`` is False when some state
    held more than the scan bound, so older jobs of that state were not looked at."""

    jobs: list[Job] = field(default_factory=list)
    scanned: int = 0
    complete: bool = True
    per_state: int = TASK_SCAN_PER_STATE


def _queue_state_reads(pipe: Any, full: str, per_state: int) -> None:
    """Queue the newest ``per_state`` ids of each state of one queue, and each state's size
    (pending counts once per priority list: high, normal, low)."""
    for key in keys.queue_lists(full):
        pipe.lrange(key, -per_state, -1)  # pushed at the tail: the newest last
        pipe.llen(key)
    for key in (keys.scheduled(full), keys.started(full)):
        pipe.zrange(key, 0, per_state - 1)
        pipe.zcard(key)
    for key in (keys.finished(full), keys.failed(full), keys.canceled(full)):
        pipe.zrevrange(key, 0, per_state - 1)  # scored by expiry: the newest ended jobs first
        pipe.zcard(key)


def recent_job_ids(per_state: int = TASK_SCAN_PER_STATE) -> tuple[list[str], bool]:
    """Ids of the newest ``per_state`` jobs of each state of each queue (deduplicated), and
    whether that covered every job (no state was larger than the bound)."""
    connection = get_redis()
    settings = get_settings()
    with connection.pipeline(transaction=False) as pipe:
        for queue in QUEUE_NAMES:
            _queue_state_reads(pipe, settings.full_queue_name(queue), per_state)
        replies = pipe.execute()
    ids: list[str] = []
    complete = True
    for members, size in zip(replies[0::2], replies[1::2]):
        complete = complete and int(size) <= per_state
        ids.extend(m.decode().rsplit(":", 1)[0] if b":" in m else m.decode() for m in members)
    return list(dict.fromkeys(ids)), complete


def find_jobs_by_task(task: str, limit: int = 50, per_state: int = TASK_SCAN_PER_STATE) -> TaskSearch:
    """Jobs whose ``fk_task`` is ``task``, newest first, at most ``limit``.

    Bounded on purpose (no index by task exists, and SCAN over every job would cost in proportion
    to Redis's size): only the newest ``per_state`` ids of each of the 6 states of each queue are
    looked at (pending: each priority list), at most 12,000 ``HMGET``s of two fields in one
    pipeline at the default bound. Jobs parked by a rate or concurrency limit wait in per-limiter
    lists, not per queue, and are not searched here. ``complete`` tells the page
    when older jobs exist that were not searched."""
    ids, complete = recent_job_ids(per_state)
    if not ids:
        return TaskSearch(complete=complete, per_state=per_state)
    connection = get_redis()
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ("fk_task", "created_at"))
        replies = pipe.execute()
    wanted = task.encode()
    matches = [(parse_time(created) or 0.0, job_id) for job_id, (name, created) in zip(ids, replies) if name == wanted]
    matches.sort(reverse=True)
    jobs = fetch_jobs([job_id for _created, job_id in matches[:limit]], connection)
    return TaskSearch(jobs=jobs, scanned=len(ids), complete=complete, per_state=per_state)


# --- throughput ----------------------------------------------------------------------------------------
def _bucket_key(step: int, start: int) -> str:
    return minute_key(start) if step == 60 else keys.metrics_hour(start)


def throughput(range_name: str, now: float | None = None) -> dict[str, Any]:
    """Completed and failed executions per bucket over ``range_name`` (``1h``: per minute,
    ``24h``: per hour), oldest first; the last bucket is the current, still filling one."""
    step, count = THROUGHPUT_RANGES[range_name]
    current = int((time.time() if now is None else now) // step) * step
    starts = [current - step * offset for offset in range(count - 1, -1, -1)]
    with get_redis().pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hmget(_bucket_key(step, start), ("completed", "failed"))
        replies = pipe.execute()
    points = [{"t": start, "completed": int(done or 0), "failed": int(failed or 0)}
              for start, (done, failed) in zip(starts, replies)]
    return {"range": range_name, "step": step, "points": points}
