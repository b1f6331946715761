"""The probe job of bench/recovery.py (workers load it with ``--import bench.recovery_tasks``)."""

from __future__ import annotations

import os
import time

from core.api.queues import email_queue
from core.execution.progress import current_job_id
from core.platform.connection import get_redis


@email_queue.task(max_retries=0, max_stalls=10)
def recovery_probe(limit: float = 120.0) -> int:
    """Note each run's start (wall time, pid) in ``bench:rec:<id>``, then hold until released."""
    job_id = current_job_id()
    redis = get_redis()
    redis.rpush(f"bench:rec:{job_id}", f"{time.time():.6f} {os.getpid()}")
    until = time.monotonic() + limit
    while time.monotonic() < until and not redis.exists(f"bench:rec:release:{job_id}"):
        time.sleep(0.05)
    return os.getpid()
