"""Enqueue with Redis down: the durable fallback spool's latency and rate, from 1 and 4 processes.

    .venv/bin/python -m bench.fallback_spool [--jobs 2000] [--sync normal|full]

Enqueue: each process points REDIS_URL at a port where nothing listens, so every enqueue goes to the
spool (one SQLite transaction, committed before enqueue returns). The processes share one spool
file, as gunicorn workers on one host do. Reported: p50/p99 of one enqueue and the aggregate rate.
The spool's runner threads are kept from running the jobs (the jobs are delayed an hour) so the
numbers are the enqueue path alone.

Claim: the cost of one runner thread's claim (one transaction) from a spool holding ``--jobs``
due jobs, behind 0, 100 or 499 jobs a concurrency limit holds (each claim reads past them and
records their reason), in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.servers import ROOT, free_port

_CHILD = """
import json, sys, time
from core.api.queues import email_queue
n = int(sys.argv[1])
email_queue.enqueue_job("noop", {}, delay=3600)  # warm: imports, spool schema, health check
samples = []
start = time.perf_counter()
for i in range(n):
    t0 = time.perf_counter()
    email_queue.enqueue_job("noop", {"i": i}, delay=3600)
    samples.append(time.perf_counter() - t0)
print(json.dumps({"elapsed": time.perf_counter() - start, "samples": samples}))
"""


def run(processes: int, jobs: int, sync: str) -> dict[str, float]:
    spool = Path(tempfile.mkdtemp(prefix="fikiri-spool-bench-")) / "spool.db"
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "JOBS_TASK_MODULES": "bench.our_tasks",
           "JOBS_FALLBACK_SPOOL": str(spool), "JOBS_FALLBACK_SYNC": sync,
           "JOBS_FALLBACK_MAX_PENDING": str(processes * (jobs + 10)), "PYTHONPATH": str(ROOT)}


    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(jobs)], cwd=ROOT, env={**os.environ, **env},
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    began = time.perf_counter()
    outputs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - began
    samples = sorted(s for out in outputs for s in out["samples"])
    busy = max(out["elapsed"] for out in outputs)
    return {
        "processes": processes, "jobs": processes * jobs,
        "p50_ms": round(samples[len(samples) // 2] * 1000, 3), "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3),
        "jobs_per_s": round(processes * jobs / busy, 1), "wall_s": round(wall, 2),
    }


def claim_cost(jobs: int, held: int) -> float:
    """Microseconds per claim: ``jobs`` claims from a spool with ``held`` limited jobs ahead of them."""
    from core.fallback.spool import Spool
    from core.queue.job_model import Job, JobStatus

    spool = Spool(Path(tempfile.mkdtemp(prefix="fikiri-spool-claims-")) / "spool.db")
    now = time.time()
    one_at_a_time = json.dumps([{"n": "conc:held", "c": 1, "l": "concurrency limited: held (at most 1 running)"}])

    def add(job_id: str, run_at: float, limits: str | None, priority: int) -> None:
        job = Job(job_id=job_id, queue="email", task_name="noop", status=JobStatus.PENDING, payload={"x": "y" * 100},
                  max_retries=0, created_at=now)
        spool.add(job, run_at, priority, None, 10**9, limits)

    add("holder", now - 10, one_at_a_time, 0)
    spool.claim("another-process", 3600)  # holds the permit for the whole run
    for i in range(held):
        add(f"held-{i}", now - 5, one_at_a_time, 0)
    for i in range(jobs):
        add(f"free-{i}", now, None, 1)
    started = time.perf_counter()
    for _ in range(jobs):
        job, _abandoned = spool.claim("bench", 30)
        assert job is not None and job.id.startswith("free-"), job
    return (time.perf_counter() - started) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="enqueues per process (default 2000)")
    parser.add_argument("--sync", choices=("normal", "full"), default="normal")
    args = parser.parse_args()
    print("| processes | jobs | p50 ms | p99 ms | jobs/s (all processes) |")
    print("| --- | --- | --- | --- | --- |")
    for processes in (1, 4):
        r = run(processes, args.jobs, args.sync)
        print(f"| {r['processes']} | {r['jobs']} | {r['p50_ms']} | {r['p99_ms']} | {r['jobs_per_s']:,} |")
    print(f"\n| jobs held by a limit ahead | µs per claim ({args.jobs} due jobs) |")
    print("| --- | --- |")
    for held in (0, 100, 499):
        print(f"| {held} | {claim_cost(args.jobs, held):,.0f} |")


if __name__ == "__main__":
    main()
