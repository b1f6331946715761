"""What cluster mode costs (issue 25): the same work on a standalone redis-server and on a real
3-master Redis Cluster with ``REDIS_CLUSTER=1`` (every key in the ``{fikiri}`` slot, the client
pinned to its master), interleaved rounds in one run.

    .venv/bin/python -m bench.cluster_mode [--jobs 3000] [--rounds 3] [--json]

Per layout and round: enqueue ``--jobs`` no-ops one by one (rate), drain them with the default
worker (``fikiri-worker``, no flags; jobs/s between the first and the last completion, polled every
10 ms), then 200 idle round trips (enqueue, ``wait_for``; p50/p99). Over the enqueue and the
drain, read off the Redis that holds the data (INFO before and after): commands it processed per
job and its CPU per job (user + system), the figure that says how many jobs one master carries
(a core's million microseconds divided by it). The cluster's other two masters hold nothing: one
slot is one master's throughput, so equal numbers are the expected result; a gap would be the
pinned client's cost (in cluster mode every pipeline is also a MULTI/EXEC transaction). Both run
AOF everysec (tests/cluster_servers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

LAYOUTS = ("standalone", "cluster")


def _point(url: str, cluster: bool) -> None:
    from core.config import reload_settings
    from core.platform.connection import reset_connections
    from core.queue.task_registry import load_task_modules

    os.environ.update({"REDIS_URL": url, "JOBS_TASK_MODULES": "bench.our_tasks", "REDIS_CLUSTER": "1" if cluster else "0"})
    reload_settings()
    reset_connections()
    load_task_modules()


def _server_counters(node: Any) -> tuple[int, float]:
    """(commands processed, CPU seconds user + system) of one redis-server so far."""
    info = node.info()
    return int(info["total_commands_processed"]), float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _round(url: str, cluster: bool, n: int, data_node: Any) -> dict[str, float]:
    from core.api.queues import email_queue
    from tests.servers import WorkerProcess

    _point(url, cluster)
    commands_before, cpu_before = _server_counters(data_node)
    began = time.perf_counter()
    for i in range(n):
        email_queue.enqueue_job("noop", {"i": i})
    enqueue_rate = n / (time.perf_counter() - began)
    log = Path(tempfile.mkstemp(prefix="bench-cluster-", suffix=".log")[1])
    worker = WorkerProcess(url, [], env={"REDIS_CLUSTER": "1" if cluster else "0",
                                         "JOBS_TASK_MODULES": "bench.our_tasks"}, log_path=log)
    try:
        first_at, first_count = _wait_completed(lambda c: c >= 1, 60)
        last_at, _ = _wait_completed(lambda c: c >= n, 120)
        drain = (n - first_count) / max(last_at - first_at, 1e-6)
        commands_after, cpu_after = _server_counters(data_node)
        samples = []
        for i in range(200):
            time.sleep(0.002)
            t0 = time.perf_counter()
            email_queue.wait_for(email_queue.enqueue_job("noop_result", {"i": i}), timeout=10)
            samples.append(time.perf_counter() - t0)
    finally:
        worker.stop()
        log.unlink(missing_ok=True)
    samples.sort()
    return {"enqueue_per_s": enqueue_rate, "drain_jobs_per_s": drain,
            "redis_commands_per_job": (commands_after - commands_before) / n,
            "redis_cpu_us_per_job": (cpu_after - cpu_before) / n * 1e6,
            "idle_p50_ms": samples[len(samples) // 2] * 1e3, "idle_p99_ms": samples[int(len(samples) * 0.99)] * 1e3}


def _wait_completed(enough: Any, timeout: float) -> tuple[float, int]:
    from core.api.queues import email_queue

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = email_queue.get_stats()["completed_jobs"]
        if enough(count):
            return time.perf_counter(), count
        time.sleep(0.01)
    raise TimeoutError("the worker did not drain the queue in time")


def measure(n: int, rounds: int) -> dict[str, Any]:
    from tests.cluster_servers import RedisClusterSet
    from tests.servers import RedisServer

    results: dict[str, list[dict[str, float]]] = {layout: [] for layout in LAYOUTS}
    for r in range(rounds):
        order = LAYOUTS if r % 2 == 0 else tuple(reversed(LAYOUTS))
        for layout in order:
            if layout == "standalone":
                server = RedisServer(appendonly=True, appendfsync="everysec").start()  # as the cluster nodes run
                try:
                    results[layout].append(_round(server.url, False, n, server.client()))
                finally:
                    server.cleanup()
            else:
                cluster = RedisClusterSet(masters=3, replicas=0).start()
                try:
                    results[layout].append(_round(cluster.url, True, n, cluster.node_for("{fikiri}").client()))
                finally:
                    cluster.cleanup()
    summary = {layout: {k: round(statistics.median(x[k] for x in runs), 2) for k in runs[0]}
               for layout, runs in results.items()}
    ratios = {k: round(summary["cluster"][k] / summary["standalone"][k], 2) for k in summary["cluster"]}
    return {"jobs": n, "rounds": rounds, "load_at_end": os.getloadavg(), "median": summary,
            "cluster_over_standalone": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    out = measure(args.jobs, args.rounds)
    out["load_at_start"] = load
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.jobs} no-ops, {args.rounds} interleaved rounds, load {load[0]:.2f} -> {out['load_at_end'][0]:.2f}")
    for layout, row in out["median"].items():
        print(f"  {layout:10} " + "  ".join(f"{k} {v}" for k, v in row.items()))
    print("  cluster / standalone: " + "  ".join(f"{k} {v}" for k, v in out["cluster_over_standalone"].items()))


if __name__ == "__main__":
    main()
