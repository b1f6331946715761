"""What a reshard of the ``{fikiri}`` slot costs the callers (issue 25): enqueue latency while the
slot moves between masters, with a backlog of keys in it, and whether any job is lost or runs twice.

    .venv/bin/python -m bench.cluster_reshard [--moves 6] [--backlog 5000] [--sweep 5000,20000,...]
                                              [--new-connections] [--json]

Why: in cluster mode every key lives in one slot, and a reshard moves it key by key (``MIGRATE``,
10 keys a batch as ``redis-cli --cluster reshard`` does). Meanwhile Redis refuses our scripts and
transactions whole (ASK/TRYAGAIN) and the client sends them again for up to
``JOBS_CLUSTER_MOVE_WAIT`` s (5): an enqueue waits the move out, and one that waits longer goes to
the fallback spool. So the stall grows with the keys in the slot; this measures by how much.

The run: a 3-master cluster (tests/cluster_servers.py), this process and the default worker
(``scripts/rq_worker.py``, no flags) on it with ``REDIS_CLUSTER=1``; ``--backlog`` delayed jobs
(an hour away: they stay in the slot as job hashes), a producer thread enqueuing one ``run_mark``
job every 2 ms (each run appends its item to a file, outside Redis), and ``--moves`` moves of the
slot around the masters, 1 s apart. The moves are ``migrate_slot`` of tests/cluster_servers.py on
one kept connection per node, as ``redis-cli`` keeps them (``--new-connections``: the helper as
it is, a new connection per command, about 8 times slower).

How to read it: per move, the keys it carried, its seconds and keys/s, then the enqueues that
overlapped it (count, p50/p99/max latency in ms, how many went to the fallback) and ``after``: how
long the last of them went on after the move ended (the client's pause between tries, up to
100 ms, and its reconnect to the new master). One producer waits out each refused call, so few
calls overlap a move: the max is what every caller arriving during a move waits. ``outside`` is
every other enqueue. At the end: jobs acknowledged against jobs that ran (file lines), items that
ran more than once, and the worker side's ``abandoned``/``retried`` counts (``get_stats``).
``--sweep 5000,20000`` runs 3 moves at each backlog, each on a fresh cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

TAG = "{fikiri}"
PACE = 0.002  # s between two enqueues of the flow
# tests/servers.py gives workers the tests' short leases (grace 2 s); an operator's worker has these
WORKER_DEFAULTS = {"JOBS_WORKER_TTL": "60", "JOBS_WORKER_MAINTENANCE_INTERVAL": "2", "JOBS_WORKER_HEARTBEAT_INTERVAL": "1",
                   "JOBS_WORKER_HEARTBEAT_GRACE": "6", "JOBS_RETRY_BACKOFF_BASE": "2", "JOBS_FALLBACK_LEASE": "30"}
# worker log lines worth counting: jobs taken back from their worker, and its heartbeat thread dying
LOG_MARKS = {"requeued_abandoned": "outcome=requeued abandoned=", "heartbeat_thread_died": "Exception in thread fikiri-heartbeat",
             "heartbeat_failed": "failed unexpectedly", "noscript": "NoScriptError"}


class Producer(threading.Thread):
    """Enqueues ``run_mark`` jobs one by one, like a web process, recording each call's start, end,
    job id and whether it went to the fallback."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path, self.stopping = path, threading.Event()
        self.calls: list[tuple[float, float, str, str, bool]] = []  # start, end, item, job id, fallback
        self.errors: list[str] = []

    def run(self) -> None:
        from core.api.queues import email_queue
        from core.fallback.executor import get_fallback

        count = 0
        while not self.stopping.is_set():
            item = f"j{count}"
            start = time.perf_counter()
            try:
                job_id = email_queue.enqueue_job("run_mark", {"path": self.path, "item": item})
            except Exception as exc:  # noqa: BLE001 - counted and reported, not hidden
                self.errors.append(f"{item}: {type(exc).__name__}: {exc}")
            else:
                end = time.perf_counter()
                self.calls.append((start, end, item, job_id, get_fallback().get(job_id) is not None))
            count += 1
            time.sleep(PACE)


def _log_marks(log: Path) -> dict[str, int]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return {name: text.count(mark) for name, mark in LOG_MARKS.items()}


def _items(runs: Path) -> list[str]:
    return [line.split()[0] for line in runs.read_text().splitlines()]


def _twice(runs: Path, lines: Counter[str], ids: dict[str, str]) -> list[dict[str, Any]]:
    """The first 10 items that ran more than once: their runs (time, pid) and their job's hash."""
    from core.platform import keys
    from core.platform.connection import get_redis

    out = []
    for item in [item for item, n in lines.items() if n > 1][:10]:
        job_id = ids.get(item, "")
        fields = get_redis().hgetall(keys.job(job_id)) if job_id else {}
        out.append({"item": item, "job_id": job_id,
                    "runs": [line.split()[1:] for line in runs.read_text().splitlines() if line.split()[0] == item],
                    "job": {k.decode(): v.decode(errors="replace")[:120] for k, v in fields.items()}})
    return out


def _ms(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1e3, 1)


@contextmanager
def _kept_connections(cluster: Any) -> Iterator[None]:
    """``migrate_slot`` opens a new connection for every command (tests/cluster_servers.py: two
    per batch of 10 keys); ``redis-cli --cluster reshard`` keeps one per node, which moves keys
    about 8 times faster here (21,000 against 2,600 keys/s under the flow). This keeps one client
    per node while the slot moves."""
    clients: dict[int, Any] = {}

    def kept(node: Any, new: Any) -> Any:
        if node.port not in clients:
            clients[node.port] = new()
        return clients[node.port]

    for node in cluster.nodes:
        node.client = lambda node=node, new=node.client: kept(node, new)
    try:
        yield
    finally:
        for node in cluster.nodes:
            del node.client  # the class's method again
        for client in clients.values():
            client.close()


def _drop_fallback() -> None:
    """Forget this process's fallback executor: the next run has a spool file of its own."""
    from core.fallback import executor

    if executor._executor is not None:
        executor._executor.shutdown(wait=False)
    executor._executor = None


def run(moves: int, backlog: int, kept: bool = True) -> dict[str, Any]:
    """One run on a fresh cluster: ``backlog`` delayed jobs, the flow, ``moves`` moves of the slot
    (on kept connections as redis-cli moves it, or with ``kept=False`` a connection per command)."""
    from redis.crc import key_slot

    from bench.cluster_mode import _point
    from core.api.queues import email_queue
    from tests.cluster_servers import RedisClusterSet
    from tests.servers import WorkerProcess, wait_until

    work = Path(tempfile.mkdtemp(prefix="bench-reshard-"))
    os.environ["JOBS_FALLBACK_SPOOL"] = str(work / "spool.db")
    cluster = RedisClusterSet(masters=3, replicas=0).start()
    slot = key_slot(TAG.encode())
    runs = work / "runs.txt"
    worker = None
    producer = Producer(str(runs))
    try:
        _point(cluster.url, True)
        for _ in range(backlog):
            email_queue.enqueue_job("noop", {"i": -1}, delay=3600)
        worker = WorkerProcess(cluster.url, [], env={**WORKER_DEFAULTS, "REDIS_CLUSTER": "1",
                                                     "JOBS_TASK_MODULES": "bench.our_tasks",
                                                     "JOBS_FALLBACK_SPOOL": str(work / "spool.db")},
                               log_path=work / "worker.log")
        producer.start()
        wait_until(lambda: runs.exists() and len(runs.read_text().splitlines()) >= 200, timeout=60,
                   message="jobs to be flowing before the first move")
        windows = []
        for _ in range(moves):
            owner = cluster.node_for(TAG)
            masters = sorted(cluster.masters(), key=lambda node: node.port)
            target = masters[(next(i for i, n in enumerate(masters) if n.port == owner.port) + 1) % len(masters)]
            with _kept_connections(cluster) if kept else nullcontext():
                began, began_at = time.perf_counter(), time.time()
                moved = cluster.migrate_slot(slot, target, batch=10)
                windows.append((began, time.perf_counter(), moved, began_at))
            time.sleep(1.0)
        producer.stopping.set()
        producer.join(timeout=60)
        acknowledged = {item for _s, _e, item, _j, _f in producer.calls}
        wait_until(lambda: acknowledged <= set(_items(runs)), timeout=180, interval=0.5,
                   message="every acknowledged job to run")
        time.sleep(2.0)  # a second run of some job, if any, has time to show
        stats = email_queue.get_stats()
        lines = Counter(_items(runs))
        twice = _twice(runs, lines, {item: job_id for _s, _e, item, job_id, _f in producer.calls})
    finally:
        producer.stopping.set()
        if worker is not None:
            worker.stop()
        cluster.cleanup()
        _drop_fallback()
    per_move, inside = [], set()
    for began, ended, moved, began_at in windows:
        hit = [c for c in producer.calls if c[0] < ended and c[1] > began]
        inside.update(c[2] for c in hit)
        latencies = [c[1] - c[0] for c in hit]
        per_move.append({"began_at": round(began_at, 3), "keys": moved, "seconds": round(ended - began, 2), "keys_per_s": round(moved / (ended - began)),
                         "enqueues": len(hit), "p50_ms": _ms(latencies, 0.5), "p99_ms": _ms(latencies, 0.99),
                         "max_ms": _ms(latencies, 1.0), "fallback": sum(1 for c in hit if c[4]),
                         "after_ms": round(max((c[1] - ended for c in hit), default=0.0) * 1e3, 1)})
    outside = [c[1] - c[0] for c in producer.calls if c[2] not in inside]
    return {
        "backlog": backlog, "connections": "kept" if kept else "new per command", "moves": per_move,
        "outside": {"enqueues": len(outside), "p50_ms": _ms(outside, 0.5), "p99_ms": _ms(outside, 0.99),
                    "fallback": sum(1 for c in producer.calls if c[4] and c[2] not in inside)},
        "acknowledged": len(producer.calls), "errors": producer.errors[:5], "error_count": len(producer.errors),
        "ran": sum(1 for item in lines if item in acknowledged), "ran_twice": sum(1 for n in lines.values() if n > 1),
        "ran_unacknowledged": sum(1 for item in lines if item not in acknowledged),
        "twice": twice, "work_dir": str(work), "worker_log": _log_marks(work / "worker.log"),
        "abandoned": stats["abandoned_jobs"], "retried": stats["retried_jobs"], "failed": stats["failed_jobs"],
    }


def _print(result: dict[str, Any]) -> None:
    print(f"backlog {result['backlog']} delayed jobs, mover's connections: {result['connections']}")
    print("  move  keys    s      keys/s  enqueues  p50 ms  p99 ms  max ms  fallback  after ms")
    for i, m in enumerate(result["moves"], 1):
        print(f"  {i:<5} {m['keys']:<7} {m['seconds']:<6} {m['keys_per_s']:<7} {m['enqueues']:<9} "
              f"{m['p50_ms']:<7} {m['p99_ms']:<7} {m['max_ms']:<7} {m['fallback']:<9} {m['after_ms']}")
    out = result["outside"]
    print(f"  outside moves: {out['enqueues']} enqueues, p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, "
          f"fallback {out['fallback']}")
    print(f"  acknowledged {result['acknowledged']} (errors {result['error_count']}), ran {result['ran']}, "
          f"ran twice {result['ran_twice']}, ran unacknowledged {result['ran_unacknowledged']}; worker: abandoned "
          f"{result['abandoned']}, retried {result['retried']}, failed {result['failed']}; worker log: "
          + ", ".join(f"{k} {v}" for k, v in result["worker_log"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=6)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--sweep", help="comma-separated backlogs, one fresh run of 3 moves each")
    parser.add_argument("--new-connections", action="store_true",
                        help="move the slot as tests/cluster_servers.py does, a new connection per command")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    kept = not args.new_connections
    backlogs = [int(b) for b in args.sweep.split(",")] if args.sweep else []
    results = [run(3, b, kept) for b in backlogs] if backlogs else [run(args.moves, args.backlog, kept)]
    out = {"load_at_start": load, "load_at_end": os.getloadavg(), "runs": results}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"load average {load[0]:.2f} at start, {out['load_at_end'][0]:.2f} at end; one enqueue every "
          f"{PACE * 1e3:.0f} ms; JOBS_CLUSTER_MOVE_WAIT {os.environ.get('JOBS_CLUSTER_MOVE_WAIT', '5')} s")
    for result in results:
        _print(result)


if __name__ == "__main__":
    main()
