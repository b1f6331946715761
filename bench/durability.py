"""What durable acknowledgements cost (issue 21 item 7): enqueue latency and rate with
``JOBS_ENQUEUE_DURABILITY=none`` and ``=replica`` (WAIT 1 after the enqueue script, in the same
pipeline: one round trip, plus the time the replica takes to acknowledge), against raw RQ's
``Queue.enqueue`` on the same primary in the same run.

    .venv/bin/python -m bench.durability [--jobs 2000] [--json]

A real primary and a real replica (redis-server on loopback, REPLICAOF), one enqueueing thread.
On loopback the replica's acknowledgement comes back on its next replication ping or write, so
the cost is mostly scheduling on this machine: across hosts add one network round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any


def _stats(samples: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
            "per_s": round(len(samples) / elapsed, 1)}


def _time(send: Any, n: int) -> dict[str, float]:
    send(-1)  # warm: imports, script load, connection
    samples = []
    began = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        send(i)
        samples.append(time.perf_counter() - t0)
    return _stats(samples, time.perf_counter() - began)


def measure(n: int) -> dict[str, Any]:
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    from core.config import reload_settings
    from core.platform.connection import reset_connections
    from core.queue.task_registry import load_task_modules
    from tests.servers import RedisServer, wait_until

    primary = RedisServer().start()
    replica = RedisServer().start()
    try:
        replica.client().replicaof("127.0.0.1", primary.port)
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", timeout=30)
        os.environ.update({"REDIS_URL": primary.url, "JOBS_TASK_MODULES": "bench.our_tasks"})
        out: dict[str, Any] = {"jobs": n}
        for mode in ("none", "replica"):
            os.environ["JOBS_ENQUEUE_DURABILITY"] = mode
            reload_settings()
            reset_connections()
            load_task_modules()
            from core.api.queues import email_queue

            out[mode] = _time(lambda i: email_queue.enqueue_job("noop", {"i": i}), n)
        raw = Queue("raw", connection=redis.Redis.from_url(primary.url), serializer=JSONSerializer)
        out["raw_rq"] = _time(lambda i: raw.enqueue("bench.raw_tasks.noop", i=i), n)
        from core.platform import keys

        assert replica.client().llen(keys.queue(email_queue.name)) >= n  # the jobs did replicate
        out["replica_vs_none_p50"] = round(out["replica"]["p50_ms"] / out["none"]["p50_ms"], 2)
        out["replica_vs_raw_rq_p50"] = round(out["replica"]["p50_ms"] / out["raw_rq"]["p50_ms"], 2)
        return out
    finally:
        os.environ.pop("JOBS_ENQUEUE_DURABILITY", None)
        replica.cleanup()
        primary.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.jobs)
    if args.json:
        print(json.dumps(result))
        return
    print(f"enqueue of {result['jobs']} jobs, one thread, primary + replica on loopback")
    for name in ("none", "replica", "raw_rq"):
        r = result[name]
        print(f"  {name:<8} p50 {r['p50_ms']:>7} ms   p99 {r['p99_ms']:>7} ms   {r['per_s']:>8} /s")
    print(f"  replica/none p50 x{result['replica_vs_none_p50']}, replica/raw RQ p50 x{result['replica_vs_raw_rq_p50']}")


if __name__ == "__main__":
    main()
