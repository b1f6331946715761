"""Tasks that exist only for the demo: a slow one and one that fails once, then succeeds.

Loaded by the demo through ``JOBS_TASK_MODULES=scripts.demo_tasks`` (the worker and the web
process import the same list), which is how a host app adds its own tasks too.
"""

from __future__ import annotations

import time

from redis import RedisError

from core.api.queues import ai_queue, crm_queue, email_queue
from core.execution.progress import report_progress
from core.platform.connection import get_redis

_local_attempts: dict[str, int] = {}


@email_queue.task(max_retries=0)
def demo_slow_report(steps: int = 5, step_seconds: float = 0.3) -> dict:
    """Pretend to build a report, reporting progress as it goes."""
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        report_progress({"done": step, "total": steps})
    return {"report": "ready", "steps": steps}


@ai_queue.task(max_retries=2)
def demo_flaky_llm_call(run_key: str) -> dict:
    """Fail on the first attempt (like a provider's 503), succeed on the retry."""
    try:
        attempt = get_redis().incr(run_key)
        get_redis().expire(run_key, 3600)
    except (RedisError, OSError):  # the fallback runs without Redis: count in this process
        _local_attempts[run_key] = attempt = _local_attempts.get(run_key, 0) + 1
    if attempt == 1:
        raise RuntimeError("upstream model busy (HTTP 503) - the demo fails the first attempt on purpose")
    return {"answer": "classified as 'lead'", "attempt": attempt}


@crm_queue.task(max_retries=0)
def demo_invalid_contact(email: str) -> None:
    """Always fail: shows a failed job with its error recorded."""
    raise ValueError(f"contact email {email!r} is not valid - the demo fails this job on purpose")
