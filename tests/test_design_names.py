"""DESIGN.md's pinned names, called exactly as DESIGN.md writes them, against a real Redis and a
real worker process: code written against the contract must not meet AttributeError or TypeError."""

from __future__ import annotations

import pytest

from core.api.queues import get_email_queue
from core.errors import InvalidPayloadError
from core.platform import keys
from tests.conftest import finished
from tests.servers import wait_until


def test_is_paused_pause_and_resume(jobs_env):
    q = get_email_queue()
    assert q.is_paused() is False
    q.pause()
    assert q.is_paused() is True and q.get_stats()["paused"] is True
    q.resume()
    assert q.is_paused() is False


def test_concurrency_limit_and_concurrency_key_on_the_decorator(jobs_env, start_worker):
    q = get_email_queue()

    @q.task(max_retries=3, rate_limit="60/m", rate_key="{user_id}",
            concurrency_limit=1, concurrency_key="{user_id}", fallback=True)
    def design_limited(user_id: str) -> str:
        return f"ran for {user_id}"

    job_id = design_limited.enqueue(user_id="u7")
    limits = jobs_env.client().hget(keys.job(job_id), "fk_limits").decode()
    assert '"n":"conc:u7","c":1' in limits and '"n":"rate:u7"' in limits


def test_concurrency_limit_and_concurrency_on_one_call_must_agree(jobs_env):
    with pytest.raises(InvalidPayloadError, match="concurrency_limit or concurrency"):
        get_email_queue().enqueue_job("add", {"a": 1, "b": 2}, concurrency_limit=1, concurrency=2)
    job_id = get_email_queue().enqueue_job("add", {"a": 1, "b": 2}, concurrency_limit=2, concurrency_key="adds")
    assert '"n":"conc:adds","c":2' in jobs_env.client().hget(keys.job(job_id), "fk_limits").decode()


def test_enqueue_batch_get_batch_and_the_callbacks_words(jobs_env, start_worker):
    """``batch_done(batch_id, total, completed, failed)`` (tests/flow_tasks.py) has DESIGN.md's signature."""
    q = get_email_queue()
    payloads = [{"key": "design:batch", "item": 1}, {"key": "design:batch", "item": 2, "fail": True}]
    batch_id = q.enqueue_batch("batch_member", payloads, on_complete="batch_done", max_retries=0)
    assert isinstance(batch_id, str) and q.get_batch(batch_id)["pending"] == 2
    start_worker("email", "--worker-class", "simple")
    progress = wait_until(lambda: (b := q.get_batch(batch_id))["done"] and b, timeout=30, message="batch done")
    assert {k: progress[k] for k in ("batch_id", "total", "completed", "failed", "pending", "done")} == {
        "batch_id": batch_id, "total": 2, "completed": 1, "failed": 1, "pending": 0, "done": True}
    callback = finished(progress["callback_job_id"])
    assert callback.status.value == "completed" and callback.mode == "redis", callback.error
    assert callback.payload == {"batch_id": batch_id, "total": 2, "completed": 1, "failed": 1}
