"""Tasks for the flow-control tests (rate and concurrency limits, Retry-After, stop).

Loaded with the other test tasks (tests.task_fixtures imports it). Each records what it did in
Redis keys that the test owns: the key passed as ``key``, or ``tkey(...)`` for the callbacks,
all under the cluster hash tag (tests/servers.py ``tkey``), so the tests run on a cluster too."""

from __future__ import annotations

import time

import requests

from core.api.queues import ai_queue, email_queue
from core.execution.progress import current_job_id, should_stop
from core.platform.connection import get_redis
from core.platform.http import request_with_backoff
from tests.servers import tkey


@ai_queue.task(max_retries=0, rate_limit="120/m", rate_key="provider")
def rate_mark(key: str) -> float:
    """One call to 'the provider': the completion time goes to list ``key``."""
    now = time.time()
    get_redis().rpush(key, now)
    return now


@ai_queue.task(max_retries=0, rate_limit="4/s", rate_key="user:{user}")
def per_user_mark(key: str, user: str) -> float:
    now = time.time()
    get_redis().rpush(f"{key}:{user}", now)
    return now


@email_queue.task(max_retries=3, concurrency=1, concurrency_key="sync:{user}")
def exclusive(key: str, user: str, seconds: float) -> str:
    """Count how many run at once for ``user`` (the most seen goes to ``key:max``)."""
    client = get_redis()
    running = client.incr(f"{key}:running")
    client.rpush(f"{key}:max", running)
    client.rpush(f"{key}:started", f"{current_job_id()} {time.time()}")
    try:
        time.sleep(seconds)
    finally:
        client.decr(f"{key}:running")
    return "done"


@email_queue.task(max_retries=0)
def call_peer(url: str, key: str) -> int:
    """GET the loopback peer through core.platform.http (a 429 with Retry-After defers the job)."""
    get_redis().rpush(f"{key}:attempts", time.time())
    response = request_with_backoff(requests.Session(), "GET", url)
    return response.status_code


@email_queue.task(max_retries=3)
def stoppable(key: str, cooperative: bool = True, seconds: float = 60.0) -> str:
    """Run for up to ``seconds``; with ``cooperative`` return as soon as it is asked to stop."""
    client = get_redis()
    client.incr(f"{key}:runs")
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cooperative and should_stop():
            client.set(f"{key}:noticed", 1)
            return "stopped early"
        time.sleep(0.05)
    client.set(f"{key}:ran_out", 1)
    return "ran to the end"


# --- workflows (tests/test_workflows.py) ---------------------------------------------------------
@email_queue.task(max_retries=0)
def step_add(key: str, n: int, previous: int | None = None) -> int:
    """previous + n: a chain step; records the order steps ran in."""
    get_redis().rpush(key, f"{n}:{previous}")
    return (previous or 0) + n


@email_queue.task(max_retries=0)
def record_callback(parent_id: str, result: object = None, outcome: str | None = None, error: str | None = None) -> str:
    import json

    get_redis().rpush(tkey("callbacks"), json.dumps({"parent_id": parent_id, "result": result, "outcome": outcome,
                                                     "error": error}))
    return parent_id


@email_queue.task(max_retries=5)
def batch_member(key: str, item: int, fail: bool = False, seconds: float = 0.0) -> int:
    if seconds:
        time.sleep(seconds)
    get_redis().sadd(key, item)
    if fail:
        raise ValueError(f"member {item} fails on purpose")
    return item


@email_queue.task(max_retries=0)
def batch_done(batch_id: str, total: int, completed: int, failed: int) -> str:
    import json

    get_redis().rpush(tkey("batch_done"), json.dumps({"batch_id": batch_id, "succeeded": completed,
                                                      "failed": failed, "canceled": total - completed - failed}))
    return batch_id


# --- limits in the fallback (tests/test_fallback_limits.py): Redis is down, so a file records ------
def _note(path: str, line: str) -> None:
    with open(path, "a") as out:  # one short write per line: whole lines, even from threads
        out.write(f"{line}\n")


@email_queue.task(max_retries=0, concurrency=1, concurrency_key="sync:{user}")
def exclusive_noted(path: str, user: str, seconds: float) -> str:
    """Write '<user> start|end <time>' lines to ``path`` around a sleep."""
    _note(path, f"{user} start {time.time()}")
    time.sleep(seconds)
    _note(path, f"{user} end {time.time()}")
    return user


@email_queue.task(max_retries=0, max_stalls=0, concurrency=1, concurrency_key="sync:{user}")
def exclusive_noted_once(path: str, user: str, seconds: float) -> str:
    """exclusive_noted under the same permit, but a lost attempt fails it (max_stalls=0), not reruns it."""
    return exclusive_noted(path, user, seconds)


@ai_queue.task(max_retries=0, rate_limit="120/m", rate_key="provider-noted")
def rate_noted(path: str) -> float:
    now = time.time()
    _note(path, f"rate {now}")
    return now


@email_queue.task(max_retries=0)
def defer_noted(path: str, seconds: float, times: int) -> int:
    """Note each run in ``path``; the first ``times`` runs ask to run again in ``seconds``."""
    from core.errors import RetryAfter

    _note(path, f"run {time.time()}")
    with open(path) as notes:
        runs = len(notes.readlines())
    if runs <= times:
        raise RetryAfter(seconds, f"the peer said 429, run {runs}")
    return runs
