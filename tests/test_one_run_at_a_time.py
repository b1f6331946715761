"""At most one run of a job at a time (issue 21 item 1): SIGKILL of a worker's *main process* never
leaves a run going while the sweep hands the job to another worker, for every worker class.

200 kills: workers of the four classes (simple, threaded, prefork, fork) serve one queue together,
and every ~0.1 s the main process of one of them (the classes in turn: 50 each) is SIGKILLed and a
fresh one started. Jobs run 2.5 s, longer than the lease (2 s here) + the sweep (1 s), so a
work-horse that outlived its parent would still be running when its job is handed out again.
Every run writes start, a tick every 20 ms, and end to the job's own file (tests/stall_tasks.py);
the checker then finds any two runs of one job where the later started before the earlier's last
sign of life. Workers are forked from a preloaded launcher (tests/worker_forker.py) to make 200
starts cheap; each is a real Worker process with its own work-horses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.queue.job_model import JobStatus
from core.queue.task_registry import load_task_modules
from tests.servers import ROOT, wait_until, worker_env
from tests.stall_tasks import overlaps, runs

pytestmark = pytest.mark.timeout(400)
CLASSES = ("simple", "threaded", "prefork", "fork")
KILLS_PER_CLASS = 50
FAST_LEASE = {"JOBS_WORKER_HEARTBEAT_INTERVAL": "1", "JOBS_WORKER_HEARTBEAT_GRACE": "1",
              "JOBS_WORKER_MAINTENANCE_INTERVAL": "1"}


class Forker:
    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_forker", str(log_dir), "email", "--import", "tests.stall_tasks"],
            cwd=str(ROOT), env=worker_env(redis_url, FAST_LEASE), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True)

    def spawn(self, kind: str) -> int:
        self.proc.stdin.write(f"spawn {kind}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self, pids: list[int]) -> None:
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        self.proc.stdin.close()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self.proc.wait(30)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _horses(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]
    except OSError:
        return []


def test_200_main_process_sigkills_over_every_worker_class_leave_no_overlapping_runs(jobs_env, tmp_path):
    load_task_modules(["tests.stall_tasks"])
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    ids = email_queue.enqueue_many("logged_run", [{"directory": str(runs_dir), "seconds": 2.5} for _ in range(60)])
    forker = Forker(jobs_env.url, tmp_path)
    live = {kind: [forker.spawn(kind)] for kind in CLASSES}
    orphans_checked = []
    rng = random.Random(21)
    try:
        for kill in range(KILLS_PER_CLASS * len(CLASSES)):
            time.sleep(rng.uniform(0.05, 0.15))
            kind = CLASSES[kill % len(CLASSES)]
            victim = live[kind].pop()
            horses = _horses(victim)
            os.kill(victim, signal.SIGKILL)  # the main process only
            orphans_checked += horses
            live[kind].append(forker.spawn(kind))
        # every work-horse of a killed worker is gone within a moment (PR_SET_PDEATHSIG + the pid watch)
        wait_until(lambda: not any(_alive(pid) for pid in orphans_checked), timeout=5,
                   message="the work-horses of killed workers to die")
        wait_until(lambda: all(get_job(j).status == JobStatus.COMPLETED for j in ids), timeout=240, interval=0.5,
                   message="every job to complete")
    finally:
        forker.close([pid for pids in live.values() for pid in pids])
    bad = {j: overlaps(runs_dir / j) for j in ids if overlaps(runs_dir / j)}
    assert not bad, f"overlapping runs: {bad}"
    every_run = [r for j in ids for r in runs(runs_dir / j)]
    cut = sum(1 for r in every_run if not r["ended"])
    stalls = sum(get_job(j).stalls for j in ids)
    assert sum(get_job(j).retry_count for j in ids) == 0  # kills cost no retry
    assert cut > 0 and stalls >= cut  # kills did land mid-run, and each lost run is a recorded stall
    print(f"one run at a time: {KILLS_PER_CLASS * len(CLASSES)} main-process SIGKILLs, {len(every_run)} runs, "
          f"{cut} cut short, {stalls} stalls, {len(orphans_checked)} orphaned work-horses all dead, 0 overlaps")
