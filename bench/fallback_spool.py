"""Enqueue with Redis down: the durable fallback spool's latency and rate, from 1 and 4 processes.

    .venv/bin/python -m bench.fallback_spool [--jobs 2000] [--sync normal|full]
    .venv/bin/python -m bench.fallback_spool --burst 10000 [--kb 1 60] [--processes 1 4]

Burst (issue 21 item 5): Redis down, ``--burst`` jobs enqueued back to back by 1 or 4 processes
sharing one spool while every process's 4 runner threads run them (a no-op task): p50/p99/max of
one enqueue, enqueue errors (raw: not a JobsError, a 500 in a web handler), the runners' ends per
second during the burst, and when the last job ended.

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


_BURST_CHILD = """
import json, sys, time
from core.api.queues import email_queue
from core.errors import JobsError
from core.fallback.executor import get_fallback
n, size, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
blob = "x" * size
email_queue.enqueue_job("noop", {})  # warm: imports, spool schema, health check (not delayed: the drain waits)
print("ready", flush=True)
sys.stdin.readline()  # every process starts its burst together
fallback = get_fallback()
samples, errors = [], []
start = time.perf_counter()
for i in range(n):
    t0 = time.perf_counter()
    try:
        email_queue.enqueue_job("noop", {"i": i, "blob": blob})
    except JobsError as exc:
        errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    except Exception as exc:  # a raw error reaching the caller: what a web handler would turn into a 500
        errors.append(f"RAW {type(exc).__name__}: {str(exc)[:200]}")
    samples.append(time.perf_counter() - t0)
burst = time.perf_counter() - start
ends_in_burst = fallback.ends
deadline = time.monotonic() + timeout
while fallback.pending_count() and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"burst": burst, "samples": samples, "errors": errors, "ends_in_burst": ends_in_burst,
                  "ends": fallback.ends, "drained": time.perf_counter() - start,
                  "left": fallback.pending_count(), "end_retries": getattr(fallback, "end_retries", None)}))
"""


def burst(processes: int, total: int, size: int, timeout: float) -> dict[str, object]:
    """``total`` jobs of ``size`` bytes enqueued back to back by ``processes`` processes sharing one
    spool (Redis down), while each process's 4 runner threads run them (a no-op task)."""
    spool = Path(tempfile.mkdtemp(prefix="fikiri-spool-burst-")) / "spool.db"
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "JOBS_TASK_MODULES": "bench.our_tasks",
           "JOBS_FALLBACK_SPOOL": str(spool), "JOBS_FALLBACK_MAX_PENDING": str(total * 2 + 100),
           "PYTHONPATH": str(ROOT), "JOBS_LOG_LEVEL": "ERROR"}
    procs = [subprocess.Popen([sys.executable, "-c", _BURST_CHILD, str(total // processes), str(size), str(timeout)],
                              cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = []
    for p in procs:
        out, err = p.communicate()
        outputs.append(json.loads(out.strip().splitlines()[-1]))
        locked = err.count("database is locked")
        outputs[-1]["locked_in_log"] = locked
        outputs[-1]["runner_failures"] = err.count("fallback runner failed")
    samples = sorted(s for o in outputs for s in o["samples"])
    burst_s = max(o["burst"] for o in outputs)
    drained = max(o["drained"] for o in outputs)
    ended = sum(o["ends"] for o in outputs)
    return {
        "processes": processes, "jobs": total, "kb": size // 1000,
        "p50_ms": round(samples[len(samples) // 2] * 1000, 2),
        "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 2), "max_ms": round(samples[-1] * 1000, 1),
        "enqueue_errors": sum(len(o["errors"]) for o in outputs),
        "raw_errors": sum(1 for o in outputs for e in o["errors"] if e.startswith("RAW")),
        "burst_s": round(burst_s, 2), "enqueues_per_s": round(total / burst_s, 1),
        "ended_in_burst": sum(o["ends_in_burst"] for o in outputs),
        "runner_jobs_per_s_in_burst": round(sum(o["ends_in_burst"] for o in outputs) / burst_s, 1),
        "all_ended_s": round(drained, 2), "ended": ended, "left": sum(o["left"] for o in outputs),
        "runner_failures": sum(o["runner_failures"] for o in outputs),
        "locked_errors_logged": sum(o["locked_in_log"] for o in outputs),
        "first_error": next((e for o in outputs for e in o["errors"]), ""),
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
    parser.add_argument("--burst", type=int, default=0, metavar="N",
                        help="instead: an N-job burst (all processes together) while the runners work")
    parser.add_argument("--kb", type=int, nargs="*", default=[1, 60], help="payload sizes of the burst (KB)")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--timeout", type=float, default=300.0, help="s a burst's runners get to end every job")
    args = parser.parse_args()
    if args.burst:
        print("| processes | payload | p50 ms | p99 ms | max ms | enqueue errors (raw) | burst s | runners' jobs/s "
              "in the burst | all ended after s | left | runner failures |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for kb in args.kb:
            for processes in args.processes:
                r = burst(processes, args.burst, kb * 1000, args.timeout)
                print(f"| {r['processes']} | {r['kb']} KB | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                      f"{r['enqueue_errors']} ({r['raw_errors']}) | {r['burst_s']} | "
                      f"{r['runner_jobs_per_s_in_burst']} ({r['ended_in_burst']} ended) | {r['all_ended_s']} | "
                      f"{r['left']} | {r['runner_failures']} |", flush=True)
                if r["first_error"]:
                    print(f"  first enqueue error: {r['first_error']}", flush=True)
        return
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
