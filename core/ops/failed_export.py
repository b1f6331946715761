"""Failed jobs exported before they expire (``JOBS_FAILED_EXPORT``), so nothing vanishes unseen.

The nightly cleanup calls :func:`export_expiring_failed`: every failed job whose expiry (its
score in ``rq:failed:<q>``, from ``JOBS_FAILURE_TTL`` or ``JOBS_FAILURE_TTL_<QUEUE>``) falls
within :data:`HORIZON` is written once, as the job dict ``GET /api/jobs/<id>`` shows:

* ``JOBS_FAILED_EXPORT=/var/lib/fikiri/failed.jsonl``: appended, one JSON object a line;
* ``JOBS_FAILED_EXPORT=https://ops.example.com/dead-letters``: POSTed, :data:`CHUNK` jobs a request,
  as ``{"event": "failed_jobs_expiring", "queue", "jobs": [...]}`` (retried on 429/5xx).

What was exported is remembered per queue (``fikiri:failed_exported:<q>``, id -> expiry), so a
job is exported once per failure whatever the run cadence; the horizon of two days covers a
missed nightly run. A job that fails again later (a new expiry) is exported again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import requests

from core.api.jobs import fetch_jobs
from core.config import QUEUE_NAMES, get_settings
from core.platform import keys
from core.platform.connection import get_redis
from core.platform.http import UpstreamError, request_with_backoff

logger = logging.getLogger(__name__)

HORIZON = 2 * 86_400  # s: jobs expiring within this are exported (a missed nightly run is covered)
CHUNK = 100  # jobs per read and per POST


def _send(target: str, queue: str, rows: list[dict[str, Any]]) -> None:
    if target.startswith(("http://", "https://")):
        response = request_with_backoff(requests.Session(), "POST", target,
                                        json={"event": "failed_jobs_expiring", "queue": queue, "jobs": rows})
        if response.status_code >= 400:
            raise UpstreamError(f"JOBS_FAILED_EXPORT {target} answered {response.status_code}", response.status_code)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        stream.writelines(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in rows)


def export_expiring_failed(now: float | None = None) -> dict[str, Any]:
    """Export failed jobs expiring within :data:`HORIZON` not exported yet; ``{"target", "exported": {queue: n}}``."""
    target = get_settings().failed_export
    report: dict[str, Any] = {"target": target or None, "exported": {}}
    if not target:
        return report
    now = time.time() if now is None else now
    connection = get_redis()
    for queue in QUEUE_NAMES:
        full = get_settings().full_queue_name(queue)
        done_key = keys.failed_exported(full)
        connection.zremrangebyscore(done_key, "-inf", now)  # expired meanwhile: gone from the registry too
        connection.expire(done_key, 2 * HORIZON)  # bounded even if the export is switched off
        expiring = connection.zrangebyscore(keys.failed(full), now, now + HORIZON, withscores=True)
        with connection.pipeline(transaction=False) as pipe:
            for member, _score in expiring:
                pipe.zscore(done_key, member)
            before = pipe.execute()
        todo = [(m.decode(), score) for (m, score), seen in zip(expiring, before) if seen != score]
        exported = 0
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            jobs = fetch_jobs([job_id for job_id, _score in chunk])
            rows = [job.to_dict() for job in jobs if job.status.value == "failed"]
            if rows:
                _send(target, queue, rows)
            connection.zadd(done_key, {job_id: score for job_id, score in chunk})
            exported += len(rows)
        report["exported"][queue] = exported
    logger.info("failed jobs exported before expiry to %s: %s", target, report["exported"])
    return report
