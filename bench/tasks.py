"""The benchmark work itself, shared by every system: a no-op and a 100 ms sleep (I/O stand-in).

Both record a completion mark (see ``bench.marks``); each system registers these bodies its own
way (``bench.our_tasks``, ``bench.raw_tasks``, ``bench.app_celery``, ``bench.app_dramatiq``,
``bench.app_huey``).
"""

from __future__ import annotations

import asyncio
import time

from bench.marks import mark


def noop(i: int = -1, **_payload: object) -> None:
    """No work at all: what is left is the system's own per-job cost."""
    mark(i)


def sleep_io(i: int = -1, **_payload: object) -> None:
    """Wait 100 ms without using the CPU, like a network call."""
    time.sleep(0.1)
    mark(i)


def noop_result(i: int = -1, **_payload: object) -> int:
    """Like ``noop`` but returns a value, so systems that skip storing None still store a result."""
    mark(i)
    return i


def sleep_1ms(i: int = -1, **_payload: object) -> None:
    """A 1 ms job: what bench.wait_latency waits on."""
    time.sleep(0.001)
    mark(i)


async def async_sleep_io(i: int = -1, **_payload: object) -> None:
    """``sleep_io`` as an ``async def``: await 100 ms on the event loop, like an async HTTP call."""
    await asyncio.sleep(0.1)
    mark(i)
