"""How soon ``wait_for`` returns after a job's end (issue 22 item 3; target: p50 <= 2 ms).

    .venv/bin/python -m bench.wait_latency [--jobs 300]

A private redis-server and one ``fikiri-worker`` with no flags (the default a user gets) on the
email queue. One at a time: enqueue a 1 ms job (``sleep_1ms``) and ``wait_for`` it at once, so
the wait usually begins after the worker has claimed it (the case the old done token missed and
slept through to its one-second re-read). Reported: the gap from the job's ``ended_at``
(written by the worker's finish, same host clock) to ``wait_for`` returning, and enqueue to
return, p50/p99 in ms, plus the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench.run import ROOT, env_for, point_at
from tests.servers import RedisServer, wait_until


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def measure(jobs: int) -> dict[str, float]:
    server = RedisServer().start()
    worker = None
    try:
        point_at(server)
        from core.api.queues import email_queue

        worker = subprocess.Popen([sys.executable, "scripts/rq_worker.py", "email"], cwd=ROOT, env=env_for(server),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        warm = email_queue.enqueue_job("sleep_1ms", {})
        wait_until(lambda: email_queue.get_job_status(warm).status.is_final, timeout=60, message="worker up")
        after_end: list[float] = []
        round_trip: list[float] = []
        for _ in range(jobs):
            sent = time.time()
            job_id = email_queue.enqueue_job("sleep_1ms", {})
            job = email_queue.wait_for(job_id, timeout=10)
            back = time.time()
            assert job.status.value == "completed" and job.completed_at is not None
            after_end.append((back - job.completed_at) * 1000)
            round_trip.append((back - sent) * 1000)
        return {"jobs": jobs, "end_to_return_p50_ms": statistics.median(after_end),
                "end_to_return_p99_ms": percentile(after_end, 99),
                "end_to_return_max_ms": max(after_end),
                "enqueue_to_return_p50_ms": statistics.median(round_trip),
                "enqueue_to_return_p99_ms": percentile(round_trip, 99)}
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    load = os.getloadavg()
    result = measure(args.jobs)
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for key, value in result.items():
        print(f"{key:28} {value:10.2f}" if isinstance(value, float) else f"{key:28} {value:10d}")
    target = result["end_to_return_p50_ms"] <= 2.0
    print(f"target p50 <= 2 ms after the end: {'met' if target else 'MISSED'}")


if __name__ == "__main__":
    main()
