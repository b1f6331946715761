"""The nightly cleanup and the daily digest: periodic housekeeping tasks.

RQ expires job hashes by their TTLs but leaves registry entries behind until something sweeps
them; our per-user indexes keep ids of jobs that have expired. ``nightly_cleanup`` sweeps both
and reports exactly what it removed. It walks registries and the indexes we own (the set of
users with an index), never KEYS/SCAN.
"""

from __future__ import annotations

import logging
from typing import Any

from core.api.queues import all_queues, email_queue
from core.config import get_settings
from core.platform import keys
from core.platform.connection import get_redis
from core.queue import lifecycle, task_metrics

logger = logging.getLogger(__name__)


def _trim_user_indexes() -> tuple[int, int]:
    """Drop ids of expired jobs from every user index; returns (ids removed, users dropped)."""
    connection = get_redis()
    removed = dropped = 0
    for raw_user in connection.smembers(keys.users_with_jobs()):
        user = raw_user.decode()
        index = keys.user_jobs(user)
        ids = [i.decode() for i in connection.lrange(index, 0, -1)]
        if not ids:
            connection.srem(keys.users_with_jobs(), user)
            dropped += 1
            continue
        with connection.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(keys.job(job_id))
            present = pipe.execute()
        gone = [job_id for job_id, alive in zip(ids, present) if not alive]
        if gone:
            with connection.pipeline() as pipe:
                for job_id in gone:
                    pipe.lrem(index, 0, job_id)
                pipe.execute()
            removed += len(gone)
        if len(gone) == len(ids):
            connection.srem(keys.users_with_jobs(), user)
            dropped += 1
    return removed, dropped


def _export_failed() -> Any:
    """Failed jobs about to expire, exported first (JOBS_FAILED_EXPORT); a failing export never stops the sweep."""
    from core.ops.failed_export import export_expiring_failed

    try:
        return export_expiring_failed()["exported"]
    except Exception as exc:  # noqa: BLE001 - reported, and the cleanup goes on
        logger.exception("export of expiring failed jobs to JOBS_FAILED_EXPORT failed")
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def nightly_cleanup() -> dict[str, Any]:
    """Sweep expired registry entries, stale user-index ids and over-long metrics history."""
    report: dict[str, Any] = {"queues": {}}
    report["failed_exported"] = _export_failed()
    connection = get_redis()
    for queue in all_queues():
        report["queues"][queue.short_name] = {"registry_entries_removed": lifecycle.expire_registries(connection, queue.name)}
    report["user_index_ids_removed"], report["user_indexes_dropped"] = _trim_user_indexes()
    report["metrics_entries_removed"] = task_metrics.trim_history()
    logger.info("nightly cleanup: %s", report)
    return report


def daily_digest() -> dict[str, Any]:
    """Email the operators a summary of every queue and the busiest tasks."""
    stats = {q.short_name: q.get_stats() for q in all_queues()}
    tasks = task_metrics.get_task_stats()
    lines = [f"{name}: {s['completed_jobs']} completed, {s['failed_jobs']} failed, {s['pending_jobs']} pending"
             for name, s in stats.items()]
    lines += [f"task {name}: {t['succeeded']} ok, {t['failed']} failed, p95 {t['p95_duration']:.3f}s"
              for name, t in sorted(tasks.items(), key=lambda item: -item[1]["total"])[:10]]
    to = get_settings().digest_to
    job_id = email_queue.enqueue_job("send_email", {"to": to, "subject": "Fikiri Jobs daily digest",
                                                    "body": "\n".join(lines)})
    return {"to": to, "email_job_id": job_id, "queues": stats}


email_queue.register_task("nightly_cleanup", nightly_cleanup, max_retries=1)
email_queue.register_task("daily_digest", daily_digest, max_retries=1)
