"""``async def`` tasks for tests/test_async_tasks.py (loaded with tests.task_fixtures).

Side effects are counted in Redis keys under ``test:`` so a test can prove how far a task got
(started, ran to its end, noticed a stop) whichever worker class ran it."""

from __future__ import annotations

import asyncio

from core.api.queues import email_queue
from core.execution.progress import report_progress, should_stop
from core.platform.connection import get_redis


@email_queue.task(max_retries=0)
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@email_queue.task(max_retries=3)
async def async_sleep(seconds: float, key: str, cooperative: bool = False) -> str:
    """Count the start, await ``seconds`` (checking should_stop each 50 ms when ``cooperative``),
    count the end. A task interrupted at its await never counts the end."""
    get_redis().incr(f"{key}:started")
    if cooperative:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if should_stop():
                get_redis().set(f"{key}:noticed", 1)
                return "stopped early"
            await asyncio.sleep(0.05)
    else:
        await asyncio.sleep(seconds)
    get_redis().incr(key)
    return "slept"


@email_queue.task(max_retries=2)
async def async_fail_times(key: str, times: int) -> dict:
    """Fail the first ``times`` attempts (counted in Redis), then succeed."""
    attempt = get_redis().incr(key)
    await asyncio.sleep(0)
    if attempt <= times:
        raise RuntimeError(f"planned async failure {attempt} of {times}")
    return {"attempts": attempt}


@email_queue.task(max_retries=0)
async def async_progress(steps: int) -> int:
    for step in range(1, steps + 1):
        report_progress({"done": step, "total": steps})
        await asyncio.sleep(0)
    return steps


@email_queue.task(max_retries=0)
async def async_not_json() -> object:
    return {1, 2}


@email_queue.task(max_retries=0)
async def async_span(seconds: float, key: str) -> str:
    """Await ``seconds`` and record "start,end" (this process's monotonic clock) in the list ``key``:
    how many ran at once, from the tasks' own view."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(seconds)
    get_redis().rpush(key, f"{start},{loop.time()}")
    return "spanned"


# --- the fork class (tests/test_fork_worker.py): sync, but here with the other process-level probes
@email_queue.task(max_retries=0)
def pid_span(key: str, seconds: float = 0.05) -> int:
    """Record "pid,start,end" (wall clock) in the list ``key`` and return the pid that ran the job."""
    import os
    import time

    start = time.time()
    time.sleep(seconds)
    get_redis().rpush(key, f"{os.getpid()},{start},{time.time()}")
    return os.getpid()
