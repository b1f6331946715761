"""Recovery after a worker dies, and no false recovery when it is only paused (issue 21 item 4).

    .venv/bin/python -m bench.recovery [--rounds 10] [--jobs 4] [--pauses 5] [--json]

With the default lease settings (heartbeat 1 s, grace 6 s: lease 7 s; sweep every 2 s; see
core/config.py), each round starts a prefork worker, gives it ``--jobs`` probe jobs that hold
until released, starts a second worker, then SIGKILLs the first: the whole process group in even
rounds (a host gone), its main process alone in odd ones (the work-horses die with it). Measured
per job, from the kill: *requeued* (the sweep put it back: its status left ``running``) and
*restarted* (the second worker's run began). Bound: lease + sweep = 9 s.

False recoveries: ``--pauses`` times, a worker running two probes is SIGSTOPped 5 s (a GC pause,
a starved VM) while another worker sweeps, then SIGCONTed; a probe that started a second run, or
got a stall, is a false recovery (expected: 0).

A real redis-server and real worker processes (tests/servers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from typing import Any

DEFAULTS = {"JOBS_WORKER_HEARTBEAT_INTERVAL": "1", "JOBS_WORKER_HEARTBEAT_GRACE": "6",
            "JOBS_WORKER_MAINTENANCE_INTERVAL": "2"}
ARGS = ["email", "--worker-class", "prefork", "--import", "bench.recovery_tasks"]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


def _starts(client: Any, job_id: str) -> list[float]:
    return [float(x.split()[0]) for x in client.lrange(f"bench:rec:{job_id}", 0, -1)]


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


def _release(client: Any, ids: list[str]) -> None:
    for job_id in ids:
        client.set(f"bench:rec:release:{job_id}", 1)


def measure(rounds: int, jobs: int, pauses: int) -> dict[str, Any]:
    from core.api.jobs import get_job
    from core.api.queues import email_queue
    from core.platform import keys
    from core.platform.connection import reset_connections
    from core.queue.job_model import JobStatus
    from core.queue.task_registry import load_task_modules
    from tests.servers import RedisServer, WorkerProcess

    server = RedisServer().start()
    os.environ["REDIS_URL"] = server.url
    from core.config import reload_settings

    reload_settings()
    reset_connections()
    load_task_modules(["bench.recovery_tasks"])
    client = server.client()
    requeued: list[float] = []
    restarted: list[float] = []
    false_recoveries = 0
    workers: list[WorkerProcess] = []

    def worker(concurrency: int) -> WorkerProcess:
        started = WorkerProcess(server.url, [*ARGS, "--concurrency", str(concurrency)], env=DEFAULTS)
        workers.append(started)
        return started

    def registered(w: WorkerProcess) -> bool:
        return any(client.hget(k, "pid") == str(w.pid).encode() for k in client.smembers(keys.workers()))

    try:
        for round_ in range(rounds):
            victim = worker(jobs)
            ids = [email_queue.enqueue_job("recovery_probe", {}) for _ in range(jobs)]
            _wait(lambda ids=ids: all(_starts(client, j) for j in ids), 60, "the probes to start")
            survivor = worker(jobs)
            _wait(lambda w=survivor: registered(w), 60, "the second worker to register")
            killed = time.time()
            if round_ % 2 == 0:
                victim.kill_hard()
            else:
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait(10)
            back: dict[str, float] = {}
            while len(back) < len(ids) and time.time() - killed < 60:
                for job_id in ids:
                    if job_id not in back and get_job(job_id).status != JobStatus.RUNNING:
                        back[job_id] = time.time() - killed
                time.sleep(0.01)
            requeued += back.values()
            _wait(lambda ids=ids: all(len(_starts(client, j)) >= 2 for j in ids), 60, "the probes to run again")
            restarted += [_starts(client, j)[1] - killed for j in ids]
            _release(client, ids)
            _wait(lambda ids=ids: all(get_job(j).status == JobStatus.COMPLETED for j in ids), 60, "the probes to end")
            survivor.stop()
        for _ in range(pauses):
            paused = worker(2)
            ids = [email_queue.enqueue_job("recovery_probe", {}) for _ in range(2)]
            _wait(lambda ids=ids: all(_starts(client, j) for j in ids), 60, "the probes to start")
            sweeper = worker(2)
            _wait(lambda w=sweeper: registered(w), 60, "the second worker to register")
            group = [paused.pid, *paused.children()]
            for pid in group:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(5)
            for pid in group:
                os.kill(pid, signal.SIGCONT)
            time.sleep(3)  # a sweep or two after the pause
            false_recoveries += sum(1 for j in ids if len(_starts(client, j)) > 1 or get_job(j).stalls)
            _release(client, ids)
            _wait(lambda ids=ids: all(get_job(j).status == JobStatus.COMPLETED for j in ids), 60, "the probes to end")
            paused.stop()
            sweeper.stop()
    finally:
        for w in workers:
            w.stop()
        server.cleanup()
    return {
        "kills": rounds, "jobs_recovered": len(restarted),
        "requeued_s": {"p50": _pct(requeued, 0.5), "p99": _pct(requeued, 0.99), "max": round(max(requeued), 2)},
        "restarted_s": {"p50": _pct(restarted, 0.5), "p99": _pct(restarted, 0.99), "max": round(max(restarted), 2)},
        "bound_s": 9, "pauses_5s": pauses, "jobs_paused": 2 * pauses, "false_recoveries": false_recoveries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--pauses", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.rounds, args.jobs, args.pauses)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['kills']} worker kills, {result['jobs_recovered']} jobs recovered (bound: lease 7 s + sweep 2 s)")
    for name in ("requeued_s", "restarted_s"):
        r = result[name]
        print(f"  {name[:-2]:<10} p50 {r['p50']:>5} s   p99 {r['p99']:>5} s   max {r['max']:>5} s")
    print(f"{result['pauses_5s']} SIGSTOPs of 5 s over {result['jobs_paused']} running jobs: "
          f"{result['false_recoveries']} false recoveries")


if __name__ == "__main__":
    main()
