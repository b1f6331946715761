"""What one ``get_stats()`` costs: Redis commands (``INFO commandstats``) and time, with a few jobs
and with a backlog behind each priority list's head. ``python -m bench.stats_cost [--backlog N]``.

Run it in two checkouts to compare (issue 24: before and after latency tracking); prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from core.config import reload_settings
from core.platform.connection import get_redis, reset_connections
from tests.servers import RedisServer


def commands(connection) -> dict[str, int]:
    return {name: info["calls"] for name, info in connection.info("commandstats").items() if name != "cmdstat_info"}


def measure(queue, calls: int = 500) -> dict[str, float]:
    connection = get_redis()
    before = commands(connection)
    queue.get_stats()
    after = commands(connection)
    used = {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        queue.get_stats()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"commands": sum(used.values()), "p50_ms": round(samples[calls // 2] * 1000, 3),
            "p99_ms": round(samples[int(calls * 0.99)] * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=300_000, help="ids pushed behind the heads (per list)")
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        os.environ.update({"REDIS_URL": server.url, "JOBS_TASK_MODULES": "bench.our_tasks"})
        reload_settings()
        reset_connections()
        from core.api.queues import email_queue
        from core.platform import keys

        for priority in ("high", "normal", "low"):  # real jobs at the heads: their enqueued_at is read
            email_queue.enqueue_job("noop", {"i": 0}, priority=priority)
        few = measure(email_queue)
        connection = get_redis()
        for key in keys.queue_lists(email_queue.name):
            for start in range(0, args.backlog, 10_000):
                connection.rpush(key, *[f"bulk-{start + i}" for i in range(min(10_000, args.backlog - start))])
        many = measure(email_queue)
        print(json.dumps({"with 3 jobs": few, f"with {3 * args.backlog + 3} jobs": many}))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
