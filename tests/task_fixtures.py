"""Tasks used by the tests (loaded in workers via JOBS_TASK_MODULES=tests.task_fixtures).

Side effects are counted in Redis keys that the test owns (passed as ``key``; the suites that
also run on a cluster pass ``tkey(...)`` keys, tests/servers.py), so a test can prove how many
times something really ran."""

from __future__ import annotations

import os
import time

from core.api.queues import ai_queue, crm_queue, email_queue
from core.execution.progress import current_job_id, report_progress
from core.platform.connection import get_redis


@email_queue.task(max_retries=0)
def add(a: int, b: int) -> int:
    return a + b


@email_queue.task(max_retries=0)
def record_run(key: str, value: str = "") -> str:
    """Append ``value`` (or the job id) to the list ``key``: the order jobs ran in."""
    get_redis().rpush(key, value or current_job_id() or "")
    return value


@email_queue.task(max_retries=0)
def sleep_then_count(seconds: float, key: str) -> str:
    """Mark start, sleep, then count one completed run."""
    get_redis().incr(f"{key}:started")
    time.sleep(seconds)
    get_redis().incr(key)
    return "slept"


@email_queue.task(max_retries=3)
def fail_times(key: str, times: int) -> dict:
    """Fail the first ``times`` attempts (counted in Redis), then succeed."""
    attempt = get_redis().incr(key)
    get_redis().rpush(f"{key}:at", time.time())
    if attempt <= times:
        raise RuntimeError(f"planned failure {attempt} of {times}")
    return {"attempts": attempt}


@email_queue.task(max_retries=0)
def always_fail(message: str) -> None:
    raise ValueError(message)


@email_queue.task(max_retries=0)
def with_progress(steps: int) -> int:
    for step in range(1, steps + 1):
        report_progress({"done": step, "total": steps})
    return steps


@ai_queue.task(max_retries=0)
def ai_echo(text: str) -> str:
    return text


@crm_queue.task(max_retries=0)
def crm_echo(text: str) -> str:
    return text


@email_queue.task(max_retries=3)
def mark_done(key: str, item: str, seconds: float = 0.0) -> str:
    """Idempotent side effect (a set member per item) plus a count of every run."""
    if seconds:
        time.sleep(seconds)
    get_redis().sadd(key, item)
    get_redis().incr(f"{key}:runs")
    return item


def _mark(key: str, item: str, seconds: float) -> str:
    get_redis().incr(f"{key}:started")
    if seconds:
        time.sleep(seconds)
    get_redis().sadd(key, item)
    get_redis().incr(f"{key}:runs")
    return item


@ai_queue.task(max_retries=10, max_stalls=10)  # the fault loops kill workers under it
def ai_mark_done(key: str, item: str, seconds: float = 0.0) -> str:
    """mark_done on the ai queue (kill and restart loops spread work over every queue)."""
    return _mark(key, item, seconds)


@crm_queue.task(max_retries=10, max_stalls=10)  # the fault loops kill workers under it
def crm_mark_done(key: str, item: str, seconds: float = 0.0) -> str:
    return _mark(key, item, seconds)


@email_queue.task(max_retries=10, max_stalls=10)  # the fault loops kill workers under it
def email_mark_done(key: str, item: str, seconds: float = 0.0) -> str:
    return _mark(key, item, seconds)


def append_line(path: str, line: str) -> None:
    """One O_APPEND write of a whole line: lines of processes killed mid-run are never torn."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@email_queue.task(max_retries=3)
def file_mark(path: str, item: str, seconds: float = 0.0) -> str:
    """Append ``item`` to a file once the work is done: side effects counted outside Redis (the
    fallback tests run while Redis is down)."""
    if seconds:
        time.sleep(seconds)
    append_line(path, item)
    return item


@ai_queue.task(max_retries=0, fallback=False)
def heavy_ai(text: str) -> str:
    """A task that must never run in a web process (fallback=False)."""
    return text

from tests import async_tasks, flow_tasks, retry_tasks  # noqa: E402,F401  the async, flow-control and retry-policy tests' tasks


@email_queue.task(max_retries=10, group="{tenant}")
def group_mark(key: str, item: str, tenant: str, seconds: float = 0.0) -> str:
    """A grouped job (one group per ``tenant``) that records, in Redis time, when each run started
    and ended (``<key>:spans``: ``tenant|start|end``) and the order runs began (``<key>:order``), then
    marks its item done: the group tests check the rotation and the group_concurrency bound from them."""
    r = get_redis()
    sec, usec = r.time()
    start = sec + usec / 1e6
    r.rpush(f"{key}:order", f"{tenant}|{item}")
    r.incr(f"{key}:started")
    if seconds:
        time.sleep(seconds)
    sec, usec = r.time()
    r.rpush(f"{key}:spans", f"{tenant}|{start:.6f}|{sec + usec / 1e6:.6f}")
    r.sadd(key, item)
    r.incr(f"{key}:runs")
    return item


@email_queue.task(max_retries=0, max_stalls=20, group="{tenant}")  # the fallback kill loop kills processes under it
def group_noted(path: str, tenant: str, item: str, seconds: float = 0.0) -> str:
    """A grouped job that appends ``tenant item start end pid`` (this host's clock) to a file once
    it ends: the fallback group tests read the rotation and the group_concurrency bound from it while
    Redis is down (a file, since Redis is not there to record anything)."""
    start = time.time()
    if seconds:
        time.sleep(seconds)
    append_line(path, f"{tenant} {item} {start:.6f} {time.time():.6f} {os.getpid()}")
    return item


@email_queue.task(max_retries=10, max_stalls=50, group="{tenant}")  # the mixed fault loop kills and restarts under it
def group_mark_durable(key: str, item: str, tenant: str, seconds: float = 0.0) -> str:
    """group_mark with room for many stalls; ``tenant=""`` leaves the job ungrouped (the declared
    template cannot be filled), so one task gives the loop grouped and ungrouped jobs alike."""
    return group_mark(key, item, tenant, seconds)
