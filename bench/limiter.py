"""The limiter's cost per job: no-op throughput with a limit far above the rate vs no limit.

    .venv/bin/python -m bench.limiter [--quick]

Four variants of the same no-op task run interleaved (A/B/C/D, each repetition on a fresh
redis-server, N jobs enqueued first, then two simple workers with prefetch 10 in burst mode):
no limit; no limit with the events stream off (``JOBS_EVENTS_MAXLEN=0``: the stream's price);
``rate_limit="1000000/s"``; ``concurrency=10000``. Reported: jobs/s first start to
last end (median, min-max) and Redis commands per job (INFO commandstats, script calls count as
one each plus every command they run), so the ratio is the limiter's own price.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.run import ROOT, _completion_rate, env_for, point_at
from tests.servers import RedisServer

# name: (task, JOBS_EVENTS_MAXLEN); the first is the base every ratio is taken against
VARIANTS = {
    "no limit": ("noop", "50000"),
    "no limit, events off": ("noop", "0"),
    "rate 1000000/s": ("noop_rate_limited", "50000"),
    "concurrency 10000": ("noop_concurrency_limited", "50000"),
}


def _commands(client) -> int:
    return sum(v["calls"] for k, v in client.info("commandstats").items() if k != "cmdstat_info")


def run_once(task: str, n: int, events_maxlen: str) -> dict[str, float]:
    server = RedisServer().start()
    try:
        os.environ["JOBS_EVENTS_MAXLEN"] = events_maxlen  # this process and (env_for) the workers
        point_at(server)
        from core.api.queues import email_queue

        ids = email_queue.enqueue_many(task, [{} for _ in range(n)], max_retries=0)
        client = server.client()
        before = _commands(client)
        subprocess.run([sys.executable, "scripts/rq_worker.py", "email", "--burst", "--worker-class", "simple",
                        "--processes", "2", "--prefetch", "10"], cwd=ROOT, env=env_for(server),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
        used = _commands(client) - before
        return {"jobs_per_s": _completion_rate(server, ids), "commands_per_job": used / n}
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, reps = (1000, 1) if args.quick else (5000, 5)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(reps):
        for name, (task, events_maxlen) in VARIANTS.items():
            runs[name].append(run_once(task, n, events_maxlen))
    base = statistics.median(r["jobs_per_s"] for r in runs["no limit"])
    summary = {}
    for name, rows in runs.items():
        rates = [r["jobs_per_s"] for r in rows]
        median = statistics.median(rates)
        cmds = statistics.median(r["commands_per_job"] for r in rows)
        summary[name] = {"jobs_per_s_median": median, "min": min(rates), "max": max(rates),
                         "vs_no_limit": median / base, "commands_per_job": cmds}
        print(f"{name:22} {median:8.0f} jobs/s ({min(rates):.0f}-{max(rates):.0f})  x{median / base:.2f}  "
              f"{cmds:.1f} Redis commands/job", flush=True)
    print(json.dumps({"n": n, "reps": reps, "at": time.strftime("%Y-%m-%d %H:%M"), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
