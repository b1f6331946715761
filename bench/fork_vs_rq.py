"""The ``fork`` worker class against raw RQ's ``rq worker`` (fork per job), interleaved
(issue 22 item 6; target: ours >= 1.0x raw RQ's jobs/s).

    .venv/bin/python -m bench.fork_vs_rq [--jobs 300] [--rounds 3]

Each round, for each system: a private redis-server, ``--jobs`` no-op jobs enqueued first, then
one worker in burst mode. Reported per system, median over rounds: jobs/s from the first job's
start to the last one's end, and CPU ms per job of the worker and all its children
(RUSAGE_CHILDREN, so the forked work-horses count), in all and net of the worker's own start and
exit (a burst run over an empty queue, measured per system and subtracted), with the machine's load.
Workers may write bytecode caches (``PYTHONDONTWRITEBYTECODE`` is dropped for them, and an
unmeasured warm-up round runs first): otherwise our ~150 modules compile from source at every
start while RQ's come from site-packages' caches.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from rq import Queue

from bench.run import RAW_NOOP, ROOT, _completion_rate, env_for, point_at, raw_queue
from tests.servers import RedisServer


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(server: RedisServer) -> dict[str, str]:
    env = env_for(server)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def once(system: str, n: int) -> dict[str, float]:
    server = RedisServer().start()
    try:
        point_at(server)
        if system == "ours fork":
            from core.api.queues import email_queue

            ids = email_queue.enqueue_many("noop", [{} for _ in range(n)], max_retries=0)
            args = [sys.executable, "scripts/rq_worker.py", "email", "--burst", "--worker-class", "fork"]
        else:
            queue = raw_queue(server)
            ids = [j.id for j in queue.enqueue_many([Queue.prepare_data(RAW_NOOP) for _ in range(n)])]
            args = [str(Path(sys.executable).parent / "rq"), "worker", "raw", "--burst", "--url", server.url,
                    "--serializer", "rq.serializers.JSONSerializer", "--quiet"]
        cpu = _children_cpu()
        subprocess.run(args, cwd=ROOT, env=_env(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, timeout=900)
        used = _children_cpu() - cpu
        if not n:
            return {"start_cpu_ms": used * 1000}
        return {"jobs_per_s": _completion_rate(server, ids), "cpu_ms_per_job": used * 1000 / n}
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[str, list[dict[str, float]]] = {"ours fork": [], "rq worker": []}
    for system in runs:  # warm-up: bytecode caches written, nothing measured
        once(system, 0)
    start = {system: statistics.median(once(system, 0)["start_cpu_ms"] for _ in range(3)) for system in runs}
    for _ in range(args.rounds):
        for system in runs:
            runs[system].append(once(system, args.jobs))
    medians = {s: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for s, rows in runs.items()}
    for system, row in medians.items():
        spread = [f"{r['jobs_per_s']:.0f}" for r in runs[system]]
        net = row["cpu_ms_per_job"] - start[system] / args.jobs
        print(f"{system:10} jobs/s {row['jobs_per_s']:7.1f} (rounds {', '.join(spread)}), "
              f"CPU ms/job {row['cpu_ms_per_job']:6.2f}, net of start/exit {net:6.2f} "
              f"(start/exit {start[system]:.0f} ms)")
    ratio = medians["ours fork"]["jobs_per_s"] / medians["rq worker"]["jobs_per_s"]
    print(f"ours/raw jobs/s: {ratio:.2f}x (target >= 1.0x)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
