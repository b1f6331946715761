"""Tasks of the at-most-one-run and shutdown tests (workers load them with ``--import
tests.stall_tasks``). Each run writes its own history outside Redis, to a file per job, so a
checker can find runs that overlapped: ``start``, a ``tick`` every TICK seconds while it works, and
``end``, each with the run's id, pid and wall time (one ``O_APPEND`` write per line)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from core.api.queues import email_queue
from core.execution.progress import current_job_id, report_progress

TICK = 0.02  # s between two ticks of a running job


def _note(directory: str, run: str, what: str) -> None:
    line = f"{what} {run} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(os.path.join(directory, current_job_id() or "unknown"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _work(directory: str, seconds: float, progress: bool) -> str:
    run = uuid.uuid4().hex[:8]
    _note(directory, run, "start")
    until = time.monotonic() + seconds
    while time.monotonic() < until:  # Python-level steps: a thread interrupt lands between two of them
        time.sleep(TICK)
        _note(directory, run, "tick")
        if progress:
            report_progress({"run": run})
    _note(directory, run, "end")
    return run


@email_queue.task(max_retries=0, max_stalls=100)
def logged_run(directory: str, seconds: float, progress: bool = False) -> str:
    """Work ``seconds`` while writing the run's history (see the module docstring)."""
    return _work(directory, seconds, progress)


@email_queue.task(max_retries=0, max_stalls=100)
async def logged_run_async(directory: str, seconds: float) -> str:
    """The same as an ``async def``: it awaits between ticks, so a cancellation lands at an await."""
    run = uuid.uuid4().hex[:8]
    _note(directory, run, "start")
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await asyncio.sleep(TICK)
        _note(directory, run, "tick")
    _note(directory, run, "end")
    return run


@email_queue.task(max_retries=0, interruptible=False)
def logged_run_not_interruptible(directory: str, seconds: float) -> str:
    """The same, declared not interruptible: a shutdown waits for it past its deadline."""
    return _work(directory, seconds, False)


def runs(path: str) -> list[dict]:
    """One job's runs from its file: ``{"run", "pid", "start", "last", "ended"}`` (last: its last line's time)."""
    out: dict[str, dict] = {}
    with open(path) as lines:
        for line in lines:
            what, run, pid, at = line.split()
            entry = out.setdefault(run, {"run": run, "pid": int(pid), "start": None, "last": 0.0, "ended": False})
            if what == "start":
                entry["start"] = float(at)
            entry["last"] = max(entry["last"], float(at))
            entry["ended"] = entry["ended"] or what == "end"
    return sorted(out.values(), key=lambda r: r["start"] or 0.0)


def overlaps(path: str) -> list[tuple[dict, dict]]:
    """Pairs of runs of one job where the later one started before the earlier one's last sign of life."""
    found = []
    history = runs(path)
    for i, earlier in enumerate(history):
        for later in history[i + 1:]:
            if later["start"] is not None and later["start"] < earlier["last"]:
                found.append((earlier, later))
    return found
