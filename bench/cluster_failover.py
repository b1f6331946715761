"""What a failover of the ``{fikiri}`` slot's master costs users (issue 25): jobs acknowledged
against jobs completed, and how long until jobs flow again.

    .venv/bin/python -m bench.cluster_failover [--cycles 3] [--seconds 12] [--replicas 2] [--json]

A real 3-master cluster with two replicas per master (tests/cluster_servers.py, node timeout 2 s;
with one, the promoted master has no replica until the killed node returns, and every durable
enqueue meanwhile ends in DurabilityError after its 1 s wait, as it should: ``--replicas 1``),
``REDIS_CLUSTER=1`` and ``JOBS_ENQUEUE_DURABILITY=replica`` (an enqueue returns once ``WAIT 1``
saw a replica take it), ``REDIS_URL`` naming the master that will die, and the default worker
(``fikiri-worker``, no flags). A producer enqueues ``file_mark`` jobs one by one every 5 ms (each
appends its item to a file when it runs: runs counted outside Redis); one second into each cycle
the slot's master is killed with SIGKILL. Per cycle:

- ``promoted_s``: the kill until the cluster names a new master for the slot;
- ``redis_back_s``: the kill until the first enqueue written to the new master (acknowledged, or
  refused with DurabilityError because no replica was in sync with it yet);
- ``enqueue_back_s``: the kill until the first enqueue acknowledged by Redis again (mode "redis"),
  and how the enqueues in between ended (spooled to the fallback, refused with an error: each
  DurabilityError is a 1 s ``WAIT`` that found the promoted master's other replica still resyncing);
- ``flowing_s``: the kill until the first job enqueued after the kill completed;
- at the end, over all cycles: acknowledged (an enqueue that returned an id) against completed
  (its item in the file), items that ran more than once, and the stalls the sweep recorded
  (abandoned + retried: a job whose finish the dead master lost is taken back and runs again).

The killed node comes back as the new master's replica before the next cycle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

TAG = "{fikiri}"


class _Producer(threading.Thread):
    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path, self.stopping = path, threading.Event()
        self.sent: list[tuple[float, str, str]] = []  # (time, item, job id or "error: ...")

    def run(self) -> None:
        from core.api.queues import email_queue

        count = 0
        while not self.stopping.is_set():
            item = f"j{count}"
            try:
                outcome = email_queue.enqueue_job("file_mark", {"path": self.path, "item": item})
            except Exception as exc:  # noqa: BLE001 - an enqueue refused during the failover is a result
                outcome = f"error: {type(exc).__name__}"
            self.sent.append((time.monotonic(), item, outcome))
            count += 1
            time.sleep(0.005)


class _Watcher(threading.Thread):
    """When each item first appeared in the runs file (polled every 20 ms)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.stopping, self.first_seen = path, threading.Event(), {}

    def run(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic()
            if self.path.exists():
                for item in self.path.read_text().split():
                    self.first_seen.setdefault(item, now)
            time.sleep(0.02)


def _point(url: str) -> None:
    from core.config import reload_settings
    from core.platform.connection import reset_connections
    from core.queue.task_registry import load_task_modules
    from tests.servers import worker_env

    os.environ.update(worker_env(url, {"REDIS_CLUSTER": "1", "JOBS_ENQUEUE_DURABILITY": "replica"}))
    os.environ["JOBS_FALLBACK_SPOOL"] = tempfile.mkstemp(prefix="bench-failover-spool-", suffix=".db")[1]
    Path(os.environ["JOBS_FALLBACK_SPOOL"]).unlink()
    reload_settings()
    reset_connections()
    load_task_modules()


def _cycle(cluster: Any, producer: _Producer, watcher: _Watcher, seconds: float) -> dict[str, float]:
    from core.api.jobs import get_job

    time.sleep(1.0)
    master = cluster.node_for(TAG)
    killed_at = time.monotonic()
    master.kill(signal.SIGKILL)
    while cluster.node_for(TAG).port == master.port:
        time.sleep(0.05)
    promoted = time.monotonic() - killed_at
    time.sleep(seconds)
    after = [(t, item, outcome) for t, item, outcome in producer.sent if t > killed_at]
    back = next((t for t, _item, outcome in after
                 if not outcome.startswith("error") and (job := get_job(outcome)) is not None and job.mode == "redis"),
                None)
    # an enqueue refused for want of a replica in sync (DurabilityError) was written on the new master
    reached = next((t for t, _item, outcome in after if outcome == "error: DurabilityError"
                    or (not outcome.startswith("error") and (job := get_job(outcome)) is not None and job.mode == "redis")),
                   None)
    gap = [outcome for t, _item, outcome in after if back is None or t < back]
    spooled = sum(1 for o in gap if not o.startswith("error") and (job := get_job(o)) and job.mode == "fallback")
    flowing = min((watcher.first_seen[item] for _t, item, _o in after if item in watcher.first_seen), default=None)
    master.start()  # back as the new master's replica, so WAIT 1 can be met in the next cycle
    promoted_node = cluster.node_for(TAG)
    deadline = time.monotonic() + 60
    while cluster._replicas_online(promoted_node) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    return {"promoted_s": round(promoted, 2),
            "redis_back_s": round(reached - killed_at, 2) if reached else -1,
            "enqueue_back_s": round(back - killed_at, 2) if back else -1,
            "flowing_s": round(flowing - killed_at, 2) if flowing else -1,
            "enqueues_in_gap": len(gap), "spooled_in_gap": spooled,
            "refused_in_gap": sum(1 for o in gap if o.startswith("error"))}


def measure(cycles: int, seconds: float, replicas: int) -> dict[str, Any]:
    from core.api.jobs import get_job
    from core.api.queues import email_queue
    from tests.cluster_servers import RedisClusterSet
    from tests.servers import WorkerProcess

    cluster = RedisClusterSet(masters=3, replicas=replicas).start()
    runs = Path(tempfile.mkstemp(prefix="bench-failover-runs-", suffix=".txt")[1])
    log = Path(tempfile.mkstemp(prefix="bench-failover-worker-", suffix=".log")[1])
    worker = None
    try:
        url = f"redis://127.0.0.1:{cluster.node_for(TAG).port}/0"  # REDIS_URL names the node that dies first
        _point(url)
        worker = WorkerProcess(url, [], env={"REDIS_CLUSTER": "1", "JOBS_ENQUEUE_DURABILITY": "replica"}, log_path=log)
        producer, watcher = _Producer(str(runs)), _Watcher(runs)
        producer.start()
        watcher.start()
        rows = [_cycle(cluster, producer, watcher, seconds) for _ in range(cycles)]
        producer.stopping.set()
        producer.join(timeout=30)
        acknowledged = {item: outcome for _t, item, outcome in producer.sent if not outcome.startswith("error")}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not set(acknowledged) <= set(watcher.first_seen):
            time.sleep(0.5)
        watcher.stopping.set()
        watcher.join(timeout=5)
        counts = Counter(runs.read_text().split())
        modes = Counter((job.mode if (job := get_job(j)) else "missing") for j in acknowledged.values())
        stats = email_queue.get_stats()
    finally:
        if worker is not None:
            worker.stop()
        cluster.cleanup()
        runs.unlink(missing_ok=True)
        log.unlink(missing_ok=True)
    return {"cycles": rows, "acknowledged": len(acknowledged),
            "completed": sum(1 for item in acknowledged if counts[item] >= 1),
            "ran_twice": sum(1 for item in acknowledged if counts[item] > 1),
            "refused": len(producer.sent) - len(acknowledged), "modes": dict(modes),
            "stalls_recorded": stats["abandoned_jobs"] + stats["retried_jobs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0, help="flow after each kill before the next cycle")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per master")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    out = measure(args.cycles, args.seconds, args.replicas)
    out["load_at_start"] = load
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.cycles} failovers, {args.replicas} replicas per master, load {load[0]:.2f}")
    for i, row in enumerate(out["cycles"], 1):
        print(f"  failover {i}: " + "  ".join(f"{k} {v}" for k, v in row.items()))
    print(f"  acknowledged {out['acknowledged']}  completed {out['completed']}  ran twice {out['ran_twice']}  "
          f"refused {out['refused']}  modes {out['modes']}  stalls recorded {out['stalls_recorded']}")


if __name__ == "__main__":
    main()
