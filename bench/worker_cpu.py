"""Where the default worker's CPU goes per job: the worker process, its prefork children, Redis
(issue 22: the worker process was the pool's serial part).

    .venv/bin/python -m bench.worker_cpu [--jobs 20000] [--rounds 2] [--modes child parent]

Each round, for each mode of ``JOBS_WORKER_PREFORK_CLAIMS`` (``child``: the children claim and
record for themselves; ``parent``: the worker process claims for them and records their ends): a
private redis-server, ``--jobs`` no-ops enqueued first, then ``fikiri-worker`` with no flags until
every job has ended. CPU from ``/proc/<pid>/stat``: the worker's own (its start included, about
0.5 s), its children's (reaped ones through cutime/cstime, live ones directly), and Redis's
``INFO cpu``. Jobs/s include the worker's start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import redis

from bench.redis_probe import FreshRedis
from bench.run import ROOT

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
    return utime + stime, cutime + cstime


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(mode: str, jobs: int) -> dict[str, float]:
    server = FreshRedis()
    env = {**os.environ, "REDIS_URL": server.url, "JOBS_TASK_MODULES": "bench.our_tasks",
           "JOBS_WORKER_PREFORK_CLAIMS": mode}
    try:
        os.environ.update({"REDIS_URL": server.url, "JOBS_TASK_MODULES": "bench.our_tasks"})
        from core.config import reload_settings
        from core.platform.connection import reset_connections

        reload_settings()
        reset_connections()
        import bench.our_tasks  # noqa: F401 - registers the tasks
        from core.api.queues import email_queue

        for start in range(0, jobs, 5000):
            email_queue.enqueue_many("noop", [{"i": i} for i in range(start, min(jobs, start + 5000))])
        client = redis.Redis.from_url(server.url)
        redis_before = _redis_cpu(client)
        worker = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "rq_worker.py")], env=env,
                                  stderr=subprocess.DEVNULL)
        began = time.time()
        while email_queue.get_stats()["total_results"] < jobs:
            time.sleep(0.05)
        elapsed = time.time() - began
        own, reaped = _cpu(worker.pid)
        live = sum(_cpu(pid)[0] for pid in _children(worker.pid))
        redis_used = _redis_cpu(client) - redis_before
        worker.terminate()
        worker.wait(30)
    finally:
        server.stop()
    return {"jobs_per_s": jobs / elapsed, "worker_ms": own / jobs * 1e3, "children_ms": (reaped + live) / jobs * 1e3,
            "redis_ms": redis_used / jobs * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["child", "parent"])
    args = parser.parse_args()
    print(f"load at the start: {os.getloadavg()}")
    print("| mode | round | jobs/s | worker CPU ms/job | children CPU ms/job | Redis CPU ms/job | total |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for round_no in range(1, args.rounds + 1):
        for mode in args.modes:
            r = measure(mode, args.jobs)
            total = r["worker_ms"] + r["children_ms"] + r["redis_ms"]
            print(f"| {mode} | {round_no} | {r['jobs_per_s']:,.0f} | {r['worker_ms']:.3f} | {r['children_ms']:.3f} | "
                  f"{r['redis_ms']:.3f} | {total:.3f} |", flush=True)
    print(f"load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
