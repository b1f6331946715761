"""Stopping a running job in the simple and threaded workers (the prefork worker ends the child).

Two steps, as Sidekiq and Celery's ``revoke(terminate=True)`` users learned to expect:

1. **cooperative**: :func:`should_stop` turns True inside the job; a long task checks it between
   units of work and returns early (``core.execution.progress.should_stop`` re-exports it);
2. **hard**, ``JOBS_STOP_GRACE`` seconds later if the task is still running: :class:`JobStopped`
   is raised in the job's thread (``PyThreadState_SetAsyncExc``, as RQ's thread timeout does). It
   lands at the next Python bytecode, so a call blocked in C (a socket read without timeout) is
   interrupted only when it returns; the job's own timeout bounds that case. An ``async def`` task
   (:func:`guard_task`) is cancelled instead: ``CancelledError`` lands at the ``await`` it waits in,
   so an awaiting task is interrupted at once, and the other jobs on the event loop go on.

The raise can never land outside the job: :func:`guard` registers the running job's thread, and
the stopper injects only while it is registered, under the same lock that unregisters it; a
pending exception is cleared on the way out.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from core.errors import JobStopped

logger = logging.getLogger(__name__)


class _Running:
    def __init__(self, thread_id: int, cancel: Callable[[], None] | None = None) -> None:
        self.thread_id = thread_id
        self.cancel = cancel  # an async task's: cancel it on its loop (never an exception in the thread)
        self.stop = threading.Event()
        self.injected = False


_running: dict[str, _Running] = {}
_lock = threading.Lock()
# the job running in this thread, or in this asyncio task (each task runs in a copy of the context)
_current: contextvars.ContextVar[_Running | None] = contextvars.ContextVar("fikiri_stopping", default=None)


@contextmanager
def _registered(job_id: str, entry: _Running) -> Iterator[_Running]:
    with _lock:
        _running[job_id] = entry
    token = _current.set(entry)
    try:
        yield entry
    finally:
        with _lock:
            if _running.get(job_id) is entry:
                del _running[job_id]
            if entry.injected and entry.cancel is None:  # raised already, or still pending: never let it escape
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry.thread_id), None)
        _current.reset(token)


@contextmanager
def guard(job_id: str) -> Iterator[None]:
    """Mark ``job_id`` as running in this thread for the duration of the block."""
    with _registered(job_id, _Running(threading.get_ident())):
        yield


@contextmanager
def guard_task(job_id: str) -> Iterator[_Running]:
    """Mark ``job_id`` as running in the current asyncio task: a hard stop cancels that task.
    The caller tells a stop's cancellation from any other by the entry's ``injected``."""
    task = asyncio.current_task()
    assert task is not None, "guard_task runs inside an asyncio task"
    loop = asyncio.get_running_loop()
    with _registered(job_id, _Running(threading.get_ident(), lambda: loop.call_soon_threadsafe(task.cancel))) as entry:
        yield entry


def should_stop() -> bool:
    """True inside a job someone asked to stop: return early (the job ends ``canceled``)."""
    entry = _current.get()
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
    """Raise :class:`JobStopped` in the job's thread (cancel an async job's task) if it is still
    running; True if done."""
    with _lock:
        entry = _running.get(job_id)
        if entry is None or entry.injected:
            return False
        if entry.cancel is not None:
            entry.injected = True  # first: the task may see its CancelledError before cancel() returns here
            entry.cancel()
        else:
            done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(entry.thread_id),
                                                              ctypes.py_object(JobStopped))
            entry.injected = done == 1
    if entry.injected:
        logger.warning("job %s did not stop by itself; ended in its thread", job_id)
    return entry.injected
