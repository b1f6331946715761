"""Stopping a running job in the simple and threaded workers (the prefork worker ends the child).

Two steps, as Sidekiq and Celery's ``revoke(terminate=True)`` users learned to expect:

1. **cooperative**: :func:`should_stop` turns True inside the job; a long task checks it between
   units of work and returns early (``core.execution.progress.should_stop`` re-exports it);
2. **hard**, ``JOBS_STOP_GRACE`` seconds later if the task is still running: :class:`JobStopped`
   is raised in the job's thread (``PyThreadState_SetAsyncExc``, as RQ's thread timeout does). It
   lands at the next Python bytecode, so a call blocked in C (a socket read without timeout) is
   interrupted only when it returns; the job's own timeout bounds that case.

The raise can never land outside the job: :func:`guard` registers the running job's thread, and
the stopper injects only while it is registered, under the same lock that unregisters it; a
pending exception is cleared on the way out.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import JobStopped

logger = logging.getLogger(__name__)


class _Running:
    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.stop = threading.Event()
        self.injected = False


_running: dict[str, _Running] = {}
_lock = threading.Lock()
_local = threading.local()


@contextmanager
def guard(job_id: str) -> Iterator[None]:
    """Mark ``job_id`` as running in this thread for the duration of the block."""
    entry = _Running(threading.get_ident())
    with _lock:
        _running[job_id] = entry
    previous = getattr(_local, "entry", None)
    _local.entry = entry
    try:
        yield
    finally:
        with _lock:
            if _running.get(job_id) is entry:
                del _running[job_id]
            if entry.injected:  # raised already, or still pending: never let it escape the job
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry.thread_id), None)
        _local.entry = previous


def should_stop() -> bool:
    """True inside a job someone asked to stop: return early (the job ends ``canceled``)."""
    entry = getattr(_local, "entry", None)
    return entry is not None and entry.stop.is_set()


def request(job_id: str) -> bool:
    """Set the cooperative flag of a job running in this process; False if it is not here."""
    with _lock:
        entry = _running.get(job_id)
    if entry is None:
        return False
    entry.stop.set()
    return True


def is_running(job_id: str) -> bool:
    with _lock:
        return job_id in _running


def hard_stop(job_id: str) -> bool:
    """Raise :class:`JobStopped` in the job's thread if it is still running; True if raised."""
    with _lock:
        entry = _running.get(job_id)
        if entry is None or entry.injected:
            return False
        done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry.thread_id),
                                                          ctypes.py_object(JobStopped))
        entry.injected = done == 1
    if entry.injected:
        logger.warning("job %s did not stop by itself; ended in its thread", job_id)
    return entry.injected
