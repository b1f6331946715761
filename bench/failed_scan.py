"""What the dead-letter tools cost (issue 24, item 4): a filtered list, a dry run and a bulk
delete over a failed registry of N jobs, each failed through the lifecycle (claim, then a
finish with a 1.2 KB traceback), on a fresh redis-server.

A filter reads the registry in ranges of 500 ids with one pipelined HMGET of only the fields it
needs per range: ``status`` and ``ended_at`` always, ``fk_task``/``fk_user``/``fk_error`` when
filtered on (the error text is the largest). Prints milliseconds per call (best of 3).

    .venv/bin/python -m bench.failed_scan [--jobs 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.redis_probe import FreshRedis
from bench.rq_tools_cost import ERROR, _connect


def _best(fn: Any, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times) * 1000, 1)


def measure(n: int) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    server = FreshRedis()
    try:
        _connect(server.url)
        from core.api.dead_letters import FailedFilter, delete_failed, list_failed, retry_failed
        from core.api.queues import email_queue
        from core.platform.connection import get_redis
        from core.queue import lifecycle

        client = get_redis()
        failure = lifecycle.AttemptResult(ok=False, error=ERROR, retryable=False)
        for start in range(0, n, 500):
            for i in range(start, min(n, start + 500)):
                email_queue.enqueue_job("noop", {"i": i}, user_id=str(i % 100))
            batch = lifecycle.claim(client, "bench", "c", [email_queue.name], 500, 300)
            lifecycle.finish_many(client, [(job, failure) for job in batch])
        assert client.zcard(f"rq:failed:{email_queue.name}") == n
        out: dict[str, Any] = {"failed_jobs": n}
        for label, values in [("no_filter", {}), ("task", {"task": "noop"}), ("user", {"user_id": "7"}),
                              ("error_substring", {"error": "Disconnected"}),
                              ("since_until", {"since": 0, "until": time.time() + 60})]:
            flt = FailedFilter.parse(values)
            out[f"list_{label}_ms"] = _best(lambda f=flt: list_failed(f, 1, 20))
        out["retry_dry_run_error_ms"] = _best(lambda: retry_failed(FailedFilter.parse({"error": "Disconnected"}), True))
        start = time.perf_counter()
        deleted = delete_failed(FailedFilter.parse({"task": "noop"}))["deleted"]
        out["delete_all_ms"] = round((time.perf_counter() - start) * 1000, 1)
        assert deleted == n, deleted
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.jobs)
    print(json.dumps(result) if args.json else "\n".join(f"{k:26} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
