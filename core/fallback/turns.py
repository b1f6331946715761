"""Writers of one spool file take turns in the order they asked (a FIFO lock per file, per process).

SQLite has one write lock per file, and its busy handler gives it to whichever waiter happens to
retry first: a thread enqueueing in a loop re-takes it within microseconds of releasing it, while
the runner threads sleep out back-offs of up to 100 ms between tries. Under an enqueue burst the
runners' ``claim`` and ``end`` transactions waited out the 10 s busy timeout and failed (issue 21).
With this lock in front of every write transaction, at most one thread per process contends for
SQLite's lock, and the threads of a process get it first come, first served; across processes
the spool retries ``BEGIN IMMEDIATE`` with short sleeps (:mod:`core.fallback.spool`).
"""

from __future__ import annotations

import collections
import os
import threading
import time


class FairLock:
    """A lock granted in FIFO order, with a bounded wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[object] = collections.deque()
        self._held = False

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for this thread's turn; False if ``timeout`` s passed first (the turn is given up)."""
        me = object()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._queue.append(me)
            while self._held or self._queue[0] is not me:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._queue.remove(me)
                    self._cond.notify_all()  # the next in line may be waiting on this one
                    return False
                self._cond.wait(remaining)
            self._queue.popleft()
            self._held = True
            return True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


_locks: dict[str, FairLock] = {}
_locks_guard = threading.Lock()


def lock_for(key: str) -> FairLock:
    """The one FairLock of this process for the spool file ``key`` (its real path): every Spool on
    the file shares it. Looked up per transaction, so a forked child gets a fresh one."""
    with _locks_guard:
        found = _locks.get(key)
        if found is None:
            found = _locks[key] = FairLock()
        return found


def _after_fork() -> None:
    """A child forked while a thread of the parent held a turn would wait for it for ever: start afresh."""
    global _locks_guard
    _locks_guard = threading.Lock()
    _locks.clear()


os.register_at_fork(after_in_child=_after_fork)
