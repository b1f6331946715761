"""Job groups (issue 23), measured: starvation, fairness, cost and exactness.

    .venv/bin/python -m bench.groups [--quick]

Every scenario runs on a fresh redis-server with real worker processes (simple workers, prefetch
10) of this checkout, and the no-op task of every other benchmark (``bench.tasks.noop``), so the
numbers compare with docs/BENCHMARKS.md's other tables.

* **Starvation.** Two worker processes idle; one tenant enqueues 50,000 no-op jobs (enqueue_many in
  chunks of 1,000), then 99 tenants enqueue 10 each. Each light job's wait is enqueue (the
  harness's clock just before its tenant's enqueue call) to start (the mark the task writes). Run
  with ``group=<tenant>`` and without, and the 990 light jobs alone on the idle workers (the "empty
  queue" wait the target is relative to).
* **Fairness.** 20 tenants, 5,000 no-op jobs each, enqueued tenant after tenant (FIFO would serve
  them one after another), then two worker processes. Jain's index (sum x)^2 / (n * sum x^2) of
  the tenants' completions in every full 10 s window (and every 1 s window) that began while every
  tenant still had work (FIFO: only its first window qualifies, the first tenant is done within it).
* **Cost.** N no-op jobs enqueued first, then two burst workers; ungrouped vs spread over 100
  groups, interleaved A/B per repetition. Jobs/s first start to last end, and Redis commands per
  job (INFO commandstats: each script call counts once plus every command it runs).
* **Exactness.** 20 tenants x 500 jobs with ``group_concurrency=2`` and four worker processes;
  each run records its own start and end; the most runs of one tenant overlapping in time must
  be <= 2 over all 10,000 claims.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.limiter import _commands
from bench.marks import Marks
from bench.run import ROOT, _completion_rate, env_for, point_at
from tests.servers import RedisServer

WORKERS = [sys.executable, "scripts/rq_worker.py", "email", "--worker-class", "simple", "--prefetch", "10"]


def _start_workers(server: RedisServer, processes: int, burst: bool = False) -> subprocess.Popen:
    args = [*WORKERS, "--processes", str(processes), *(["--burst"] if burst else [])]
    return subprocess.Popen(args, cwd=ROOT, env=env_for(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_workers(server: RedisServer, processes: int) -> None:
    client = server.client()
    deadline = time.monotonic() + 60
    while client.scard("rq:workers") < processes:
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not register within 60 s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the worker group this harness started (start_new_session)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def starvation(heavy: int, grouped: bool, light_tenants: int = 99, per: int = 10) -> dict[str, float]:
    server = RedisServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        marks = Marks(Path(tmp), heavy + light_tenants * per)
        os.environ["BENCH_MARKS"] = str(marks.path)
        try:
            point_at(server)
            from core.api.queues import email_queue

            proc = _start_workers(server, 2)
            _wait_workers(server, 2)
            group = {"group": "heavy"} if grouped else {}
            for start in range(0, heavy, 1000):
                email_queue.enqueue_many("noop", [{"i": start + j} for j in range(min(1000, heavy - start))],
                                         max_retries=0, **group)
            enqueued = []
            for t in range(light_tenants):
                enqueued.append(time.time())
                email_queue.enqueue_many("noop", [{"i": heavy + t * per + j} for j in range(per)], max_retries=0,
                                         **({"group": f"tenant-{t}"} if grouped else {}))
            stamps = marks.wait_all(heavy, light_tenants * per, timeout=900)
            _stop(proc)
            waits = [stamps[k] - enqueued[k // per] for k in range(len(stamps))]
            return {"p50": _pct(waits, 0.5), "p99": _pct(waits, 0.99), "max": max(waits)}
        finally:
            marks.close()
            os.environ.pop("BENCH_MARKS", None)
            server.cleanup()


def jain(values: list[int]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 1.0


def fairness(grouped: bool, tenants: int = 20, per: int = 1500) -> dict[str, object]:
    server = RedisServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        marks = Marks(Path(tmp), tenants * per)
        os.environ["BENCH_MARKS"] = str(marks.path)
        try:
            point_at(server)
            from core.api.queues import email_queue

            for t in range(tenants):
                email_queue.enqueue_many("noop", [{"i": t * per + j} for j in range(per)], max_retries=0,
                                         **({"group": f"tenant-{t}"} if grouped else {}))
            proc = _start_workers(server, 2)
            stamps = marks.wait_all(0, tenants * per, timeout=900)
            _stop(proc)
        finally:
            marks.close()
            os.environ.pop("BENCH_MARKS", None)
            server.cleanup()
    start, end = min(stamps), max(stamps)
    last = [max(stamps[t * per:(t + 1) * per]) for t in range(tenants)]  # each tenant has work until then

    def windows(width: float) -> list[float]:
        """Jain's index per full window that began while every tenant still had work."""
        out, at = [], start
        while at + width <= end and all(done >= at for done in last):
            counts = [sum(1 for s in stamps[t * per:(t + 1) * per] if at <= s < at + width) for t in range(tenants)]
            out.append(round(jain(counts), 4))
            at += width
        return out

    ten, one = windows(10.0), windows(1.0)
    return {"run_s": end - start, "all_busy_s": min(last) - start, "windows_10s": ten,
            "min_10s": min(ten) if ten else None, "min_1s": min(one) if one else None,
            "jobs_per_s": tenants * per / (end - start)}


def cost_once(n: int, grouped: bool) -> dict[str, float]:
    server = RedisServer().start()
    try:
        point_at(server)
        from core.api.queues import email_queue

        ids: list[str] = []
        if grouped:
            for g in range(100):
                ids += email_queue.enqueue_many("noop", [{} for _ in range(n // 100)], max_retries=0,
                                                group=f"tenant-{g}")
        else:
            ids = email_queue.enqueue_many("noop", [{} for _ in range(n)], max_retries=0)
        client = server.client()
        before = _commands(client)
        proc = _start_workers(server, 2, burst=True)
        proc.wait(timeout=900)
        used = _commands(client) - before
        return {"jobs_per_s": _completion_rate(server, ids), "commands_per_job": used / len(ids)}
    finally:
        server.cleanup()


def exactness(tenants: int = 20, per: int = 500, limit: int = 2) -> dict[str, int]:
    server = RedisServer().start()
    try:
        point_at(server)
        from core.api.queues import email_queue

        for t in range(tenants):
            email_queue.enqueue_many("noop_spans", [{"tenant": f"tenant-{t}"} for _ in range(per)], max_retries=0,
                                     group=f"tenant-{t}", group_concurrency=limit)
        proc = _start_workers(server, 4, burst=True)
        proc.wait(timeout=1800)
        client = server.client()
        spans = [s.decode().split("|") for s in client.lrange("bench:spans", 0, -1)]
        by_tenant: dict[str, list[tuple[float, int]]] = {}
        for tenant, begin, end in spans:
            by_tenant.setdefault(tenant, []).extend([(float(begin), 1), (float(end), -1)])
        worst, violations = 0, 0
        for points in by_tenant.values():
            running = 0
            for _at, step in sorted(points):  # at one instant an end (-1) sorts before a start (+1)
                running += step
                if running > limit:
                    violations += 1
                worst = max(worst, running)
        from core.platform import keys

        leftover = client.hlen(keys.group_running(email_queue.name))
        return {"claims": len(spans), "max_overlap": worst, "violations": violations, "running_left": leftover}
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["starvation", "fairness", "cost", "exactness"])
    args = parser.parse_args()
    heavy, n, reps, per_tenant = (5000, 2000, 1, 300) if args.quick else (50_000, 5000, 5, 5000)
    report: dict[str, object] = {"at": time.strftime("%Y-%m-%d %H:%M"), "uptime": Path("/proc/loadavg").read_text()}
    if args.only in (None, "starvation"):
        empty = starvation(0, True)
        with_groups = starvation(heavy, True)
        without = starvation(heavy, False)
        report["starvation"] = {"empty_queue": empty, "with_groups": with_groups, "without_groups": without,
                                "p99_vs_empty": with_groups["p99"] / empty["p99"]}
        print(json.dumps(report["starvation"], indent=2), flush=True)
    if args.only in (None, "fairness"):
        report["fairness"] = {"with_groups": fairness(True, per=per_tenant), "without_groups": fairness(False, per=per_tenant)}
        print(json.dumps(report["fairness"], indent=2), flush=True)
    if args.only in (None, "cost"):
        runs: dict[str, list[dict[str, float]]] = {"ungrouped": [], "100 groups": []}
        for _ in range(reps):
            runs["ungrouped"].append(cost_once(n, False))
            runs["100 groups"].append(cost_once(n, True))
        summary = {name: {"jobs_per_s_median": statistics.median(r["jobs_per_s"] for r in rows),
                          "runs": [round(r["jobs_per_s"]) for r in rows],
                          "commands_per_job": statistics.median(r["commands_per_job"] for r in rows)}
                   for name, rows in runs.items()}
        base = summary["ungrouped"]
        summary["ratio"] = summary["100 groups"]["jobs_per_s_median"] / base["jobs_per_s_median"]
        summary["extra_commands_per_job"] = summary["100 groups"]["commands_per_job"] - base["commands_per_job"]
        report["cost"] = summary
        print(json.dumps(summary, indent=2), flush=True)
    if args.only in (None, "exactness"):
        report["exactness"] = exactness(per=50 if args.quick else 500)
        print(json.dumps(report["exactness"], indent=2), flush=True)
    report["loadavg_at_end"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
