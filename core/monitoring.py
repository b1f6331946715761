"""Task metrics, recorded by the worker for every execution and bounded in Redis.

Per task: executions (``total``), ``succeeded`` (completed), ``failed`` (raised, whether or not
a retry follows), ``retried`` (of those failed, how many got another attempt), total and average
duration, p95 over the last 100 executions, last run time and status. Also the last 100
executions per task, the newest failures across tasks, and per-minute completed/failed counts for
charts. Importing this module registers the recorder with :mod:`core.job_events`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis.client import Pipeline

from core import job_events
from core.config import get_settings
from core.connection import get_redis
from core.job_events import JobOutcome

logger = logging.getLogger(__name__)

HISTORY_SIZE = 100
FAILURES_SIZE = 500
MINUTE_TTL = 3 * 3600
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _key(*parts: str) -> str:
    return ":".join((get_settings().queue_prefix, "metrics", *parts))


def tasks_key() -> str:
    return _key("tasks")


def task_key(task: str) -> str:
    return _key("task", task)


def history_key(task: str) -> str:
    return _key("history", task)


def buckets_key(task: str) -> str:
    return _key("buckets", task)


def failures_key() -> str:
    return _key("failures")


def minute_key(minute: int) -> str:
    return _key("minute", str(minute))


def bucket_label(duration: float) -> str:
    for bound in DURATION_BUCKETS:
        if duration <= bound:
            return str(bound)
    return "+Inf"


def record(pipe: Pipeline, outcome: JobOutcome) -> None:
    """The job_events listener: add one execution to the task's metrics (same pipeline)."""
    task = outcome.task_name
    finished = outcome.finished_at or time.time()
    ok = outcome.outcome == job_events.COMPLETED
    pipe.sadd(tasks_key(), task)
    key = task_key(task)
    pipe.hincrby(key, "total", 1)
    pipe.hincrby(key, "succeeded" if ok else "failed", 1)
    if outcome.outcome == job_events.RETRYING:
        pipe.hincrby(key, "retried", 1)
    pipe.hincrbyfloat(key, "total_duration", outcome.duration)
    pipe.hset(key, mapping={"last_run": finished, "last_status": outcome.outcome})
    pipe.hincrby(buckets_key(task), bucket_label(outcome.duration), 1)
    entry = {"job_id": outcome.job_id, "queue": outcome.queue, "task": task, "status": outcome.outcome,
             "duration": round(outcome.duration, 6), "finished_at": finished}
    if not ok:
        lines = (outcome.error or "").strip().splitlines()
        entry["error"] = lines[-1][:500] if lines else ""
        pipe.lpush(failures_key(), json.dumps(entry))
        pipe.ltrim(failures_key(), 0, FAILURES_SIZE - 1)
    pipe.lpush(history_key(task), json.dumps(entry))
    pipe.ltrim(history_key(task), 0, HISTORY_SIZE - 1)
    minute = int(finished // 60) * 60
    pipe.hincrby(minute_key(minute), "completed" if ok else "failed", 1)
    pipe.expire(minute_key(minute), MINUTE_TTL)


job_events.add_listener(record)


def _p95(durations: list[float]) -> float:
    if not durations:
        return 0.0
    ordered = sorted(durations)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def get_task_stats(task: str | None = None) -> dict[str, dict[str, Any]]:
    """Metrics per task (one task if named; unknown task: an empty dict)."""
    connection = get_redis()
    names = [task] if task else sorted(n.decode() for n in connection.smembers(tasks_key()))
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(task_key(name))
            pipe.lrange(history_key(name), 0, HISTORY_SIZE - 1)
        replies = pipe.execute()
    stats: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        raw, history = replies[2 * index], replies[2 * index + 1]
        if not raw:
            continue
        data = {k.decode(): v.decode() for k, v in raw.items()}
        total = int(data.get("total", 0))
        total_duration = float(data.get("total_duration", 0.0))
        durations = [json.loads(item)["duration"] for item in history]
        stats[name] = {
            "total": total,
            "succeeded": int(data.get("succeeded", 0)),
            "failed": int(data.get("failed", 0)),
            "retried": int(data.get("retried", 0)),
            "total_duration": round(total_duration, 6),
            "avg_duration": round(total_duration / total, 6) if total else 0.0,
            "p95_duration": round(_p95(durations), 6),
            "last_run": float(data["last_run"]) if "last_run" in data else None,
            "last_status": data.get("last_status"),
        }
    return stats


def get_task_history(task: str, limit: int = HISTORY_SIZE) -> list[dict[str, Any]]:
    """The task's newest executions first (at most 100 are kept)."""
    items = get_redis().lrange(history_key(task), 0, max(0, min(limit, HISTORY_SIZE) - 1))
    return [json.loads(item) for item in items]


def get_recent_failures(limit: int = 50, hours: float = 24) -> list[dict[str, Any]]:
    """Newest failures across tasks, within the last ``hours``."""
    since = time.time() - hours * 3600
    items = [json.loads(item) for item in get_redis().lrange(failures_key(), 0, FAILURES_SIZE - 1)]
    return [item for item in items if item["finished_at"] >= since][:limit]


def processing_rate(minutes: int = 15) -> list[dict[str, Any]]:
    """Completed/failed executions per minute for the last ``minutes``, oldest first."""
    now_minute = int(time.time() // 60) * 60
    starts = [now_minute - 60 * offset for offset in range(minutes - 1, -1, -1)]
    with get_redis().pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hgetall(minute_key(start))
        replies = pipe.execute()
    return [{"minute": start, "completed": int(r.get(b"completed", 0)), "failed": int(r.get(b"failed", 0))}
            for start, r in zip(starts, replies)]


def get_duration_buckets(task: str) -> dict[str, int]:
    raw = get_redis().hgetall(buckets_key(task))
    return {k.decode(): int(v) for k, v in raw.items()}


def clear_metrics(task: str | None = None) -> int:
    """Delete the metrics of one task or of all; returns how many tasks were cleared."""
    connection = get_redis()
    names = [task] if task else [n.decode() for n in connection.smembers(tasks_key())]
    with connection.pipeline() as pipe:
        for name in names:
            pipe.delete(task_key(name), history_key(name), buckets_key(name))
            pipe.srem(tasks_key(), name)
        if not task:
            pipe.delete(failures_key())
        pipe.execute()
    return len(names)


def trim_history(keep: int = HISTORY_SIZE) -> int:
    """Trim every task's history and the failure list (nightly cleanup); returns entries removed."""
    connection = get_redis()
    names = [n.decode() for n in connection.smembers(tasks_key())]
    removed = 0
    for key, size in [(history_key(n), keep) for n in names] + [(failures_key(), FAILURES_SIZE)]:
        length = connection.llen(key)
        if length > size:
            connection.ltrim(key, 0, size - 1)
            removed += length - size
    return removed
