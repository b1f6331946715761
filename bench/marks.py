"""Completion marks shared by the harness and every worker process, without touching Redis.

Each benchmark task writes ``time.time()`` into slot ``i`` of a memory-mapped file named by
``BENCH_MARKS``. The harness reads the file to know when every job has run and when each one ran.
This keeps the measurement identical for all five systems (no result backends, no polling of
Redis that would inflate the command counts) and independent of how any system stores jobs.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

SLOT = struct.Struct("d")
_lock = threading.Lock()
_board: dict[str, mmap.mmap] = {}


def _open(path: str) -> mmap.mmap:
    with open(path, "r+b") as handle:
        return mmap.mmap(handle.fileno(), 0)


def mark(i: int) -> None:
    """Record that job ``i`` ran now (called from inside the benchmark tasks)."""
    path = os.environ.get("BENCH_MARKS")
    if not path:
        return
    board = _board.get(path)
    if board is None:
        with _lock:
            board = _board.get(path) or _board.setdefault(path, _open(path))
    offset = int(i) * SLOT.size
    if 0 <= offset <= len(board) - SLOT.size:
        SLOT.pack_into(board, offset, time.time())


class Marks:
    """The harness side: a zeroed board of ``slots`` timestamps in a file of its own."""

    def __init__(self, directory: Path, slots: int) -> None:
        self.path = directory / "marks.bin"
        self.slots = slots
        self.path.write_bytes(b"\0" * SLOT.size * slots)
        self.board = _open(str(self.path))

    def at(self, i: int) -> float:
        """When job ``i`` ran (0.0 if it has not)."""
        return SLOT.unpack_from(self.board, i * SLOT.size)[0]

    def times(self, start: int, count: int) -> list[float]:
        return list(struct.unpack_from(f"{count}d", self.board, start * SLOT.size))

    def wait_all(self, start: int, count: int, timeout: float,
                 check: Callable[[], None] | None = None) -> list[float]:
        """Block until jobs ``start .. start+count-1`` have all run; return their times.

        ``check`` is called on every poll and may raise (for example when the workers died).
        """
        deadline = time.monotonic() + timeout
        while True:
            if check is not None:
                check()
            stamps = self.times(start, count)
            if all(stamps):
                return stamps
            if time.monotonic() > deadline:
                done = sum(1 for s in stamps if s)
                raise TimeoutError(f"only {done} of {count} jobs ran within {timeout:.0f}s")
            time.sleep(0.01)

    def close(self) -> None:
        self.board.close()
