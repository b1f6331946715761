"""Async tasks (issue 22 item 7): ``asyncio.sleep(0.1)`` jobs on one ``async`` worker process
against the ``threaded`` worker with 32 threads running ``time.sleep(0.1)``, and a mixed run.

    .venv/bin/python -m bench.async_tasks [--jobs 10000] [--concurrency 500] [--threaded-jobs 2000]

Each run: a private redis-server, the jobs enqueued first (``enqueue_many``), then one
``--burst`` worker process. Reported: jobs/s from the first start to the last end (the job hashes'
``started_at`` / ``ended_at``), the worker's CPU seconds, the machine's load. Targets: async
>= 2,000 jobs/s (a 100 ms job needs >= 200 at once: ``--concurrency``; the default 100 caps it
at 1,000/s), threaded 32 threads <= 320/s by construction. The mixed run puts sync no-op and
1 ms jobs among the async ones on the same async worker and checks every result.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from bench.run import ROOT, _completion_rate, env_for, point_at
from tests.servers import RedisServer


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(task: str, n: int, worker_args: list[str], sync_every: int = 0) -> dict[str, float]:
    server = RedisServer().start()
    try:
        point_at(server)
        from core.api.queues import email_queue

        ids = email_queue.enqueue_many(task, [{} for _ in range(n)], max_retries=0)
        sync_ids: list[str] = []
        if sync_every:
            sync_ids = email_queue.enqueue_many("noop_result", [{"i": i} for i in range(n // sync_every)],
                                                max_retries=0)
            sync_ids += email_queue.enqueue_many("sleep_1ms", [{} for _ in range(n // sync_every)], max_retries=0)
        cpu = _children_cpu()
        started = time.monotonic()
        subprocess.run([sys.executable, "scripts/rq_worker.py", "email", "--burst", *worker_args], cwd=ROOT,
                       env=env_for(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       timeout=900)
        wall = time.monotonic() - started
        result = {"jobs": float(n), "jobs_per_s": _completion_rate(server, ids), "worker_cpu_s": _children_cpu() - cpu,
                  "wall_s": wall}
        if sync_ids:
            jobs = [email_queue.get_job_status(j) for j in sync_ids]
            half = len(sync_ids) // 2
            assert all(j.status.value == "completed" for j in jobs), "a sync job did not complete"
            assert [j.result for j in jobs[:half]] == list(range(half)), "a sync job's result is wrong"
            result["sync_jobs_ok"] = float(len(sync_ids))
        return result
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--threaded-jobs", type=int, default=2_000)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = {
        f"async --concurrency {args.concurrency}, {args.jobs} x asyncio.sleep(0.1)":
            run("async_sleep_100ms", args.jobs, ["--worker-class", "async", "--concurrency", str(args.concurrency)]),
        f"threaded --concurrency 32, {args.threaded_jobs} x time.sleep(0.1)":
            run("sleep_100ms", args.threaded_jobs, ["--worker-class", "threaded", "--concurrency", "32"]),
        f"async --concurrency {args.concurrency}, mixed: {args.jobs // 2} async + {args.jobs // 20} sync":
            run("async_sleep_100ms", args.jobs // 2, ["--worker-class", "async", "--concurrency", str(args.concurrency)],
                sync_every=20),
    }
    for label, row in rows.items():
        print(f"{label}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items()))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
