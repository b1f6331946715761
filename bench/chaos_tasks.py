"""The job of the fault campaign (bench/chaos.py): workers and enqueuers load it with ``--import
bench.chaos_tasks`` / ``JOBS_TASK_MODULES``.

Every run appends its history outside Redis, so the checker sees every run whatever the faults did
to Redis: ``S`` (start), ``T`` (a tick every TICK s while it works) and ``E`` (end, after the side
effect, before the worker records the finish), each line ``<what> <job id> <run id> <pid> <ppid>
<wall time>``. The log is one append-only file per process (``<dir>/runs-<pid>.log``, one
``O_APPEND`` write per line): a SIGKILLed process's lines are already in the kernel's page cache,
so they survive any fault the campaign injects (it never crashes the host), and no two processes
share a file, so no lock is held across a kill.
"""

from __future__ import annotations

import os
import time
import uuid

from core.api.queues import email_queue
from core.execution.progress import current_job_id

TICK = 0.02  # s between two ticks: the overlap check's granularity
_log: tuple[int, int] | None = None  # (pid, fd): reopened after a fork (prefork children)


def _write(directory: str, what: str, job_id: str, run: str) -> None:
    global _log
    pid = os.getpid()
    if _log is None or _log[0] != pid:
        _log = (pid, os.open(os.path.join(directory, f"runs-{pid}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    os.write(_log[1], f"{what} {job_id} {run} {pid} {os.getppid()} {time.time():.6f}\n".encode())


@email_queue.task(max_retries=2, max_stalls=5)
def chaos_job(k: int, dir: str, ms: float = 0.0) -> int:  # noqa: A002 - the payload's key
    """Log the start, work ``ms`` milliseconds (ticking), log the end: the side effect is the log.

    ``max_stalls=5``: a job hit by several faults in a row is retried through them (the campaign
    measures recovery, not the repeat-crash rule, which tests/test_fallback_stalls.py covers)."""
    job_id = current_job_id() or f"k{k}"
    run = uuid.uuid4().hex[:10]
    _write(dir, "S", job_id, run)
    until = time.monotonic() + ms / 1000.0
    while time.monotonic() < until:
        time.sleep(min(TICK, max(0.0, until - time.monotonic())))
        _write(dir, "T", job_id, run)
    _write(dir, "E", job_id, run)
    return k
