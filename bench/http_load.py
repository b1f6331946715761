"""Load on the HTTP API under gunicorn: requests/s and latency percentiles.

    python -m bench.http_load [--seconds 10] [--threads 16]

Starts its own redis-server and gunicorn on loopback, enqueues jobs, then hammers
GET /api/jobs/<id> and GET /api/jobs/queues/stats from a bounded thread pool.
Also counts the Redis commands one enqueue costs (INFO commandstats before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import requests

from tests.api_server import ApiServer
from tests.servers import RedisServer

ADMIN = "bench-admin-token"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def load(url: str, seconds: float, threads: int) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run() -> None:
        nonlocal errors
        session = requests.Session()
        mine = []
        bad = 0
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            response = session.get(url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
            mine.append(time.perf_counter() - started)
            bad += response.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "errors": errors,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def commands_per_enqueue(server: RedisServer) -> int:
    from core.api.queues import email_queue

    email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="warm")  # warm caches (server version...)
    client = server.client()
    before = sum(v["calls"] for k, v in client.info("commandstats").items())
    email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="u1")
    after = sum(v["calls"] for k, v in client.info("commandstats").items())
    return after - before - 1  # INFO itself is counted once


def enqueue_latency(n: int = 500) -> dict:
    from core.api.queues import email_queue

    samples = []
    for i in range(n):
        started = time.perf_counter()
        email_queue.enqueue_job("add", {"a": i, "b": 1}, user_id="bench")
        samples.append(time.perf_counter() - started)
    return {"p50_ms": statistics.median(samples) * 1000, "p99_ms": percentile(samples, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    args = parser.parse_args()
    server = RedisServer().start()
    os.environ.update({"REDIS_URL": server.url, "JOBS_TASK_MODULES": "tests.task_fixtures",
                       "JOBS_ADMIN_TOKEN": ADMIN, "SECRET_KEY": "bench"})
    log = Path("/tmp") / f"bench-gunicorn-{os.getpid()}.log"
    api = ApiServer(server.url, {"JOBS_ADMIN_TOKEN": ADMIN, "SECRET_KEY": "bench"}, log,
                    workers=args.gunicorn_workers)
    try:
        results = {"redis_commands_per_enqueue": commands_per_enqueue(server), "enqueue": enqueue_latency()}
        from core.api.queues import email_queue

        job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2})
        results["get_job"] = load(api.url(f"/api/jobs/{job_id}"), args.seconds, args.threads)
        results["queues_stats"] = load(api.url("/api/jobs/queues/stats"), args.seconds, args.threads)
        print(json.dumps(results, indent=2))
    finally:
        api.stop()
        server.cleanup()
        log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
