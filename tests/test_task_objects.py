"""Task objects (`@q.task` keeps the function and adds .enqueue/.delay/.options) and wait_for,
which blocks on RQ's result stream instead of polling: a real worker, a real Redis."""

from __future__ import annotations

import pytest

from core.api.jobs import cancel_job, get_job
from core.api.tasks import Task, wait_for
from tests.task_fixtures import add, fail_times, sleep_then_count


def test_a_task_is_still_the_plain_function():
    assert isinstance(add, Task)
    assert add(2, 3) == 5 and add(a=1, b=1) == 2
    assert add.__name__ == "add" and add.__doc__ == add.func.__doc__


def test_enqueue_options_and_their_errors(jobs_env):
    assert add.enqueue(a=1, b=2, _job_id="chosen-id-1") == "chosen-id-1"
    assert get_job("chosen-id-1").payload == {"a": 1, "b": 2}
    later = add.options(delay=3600, user_id="u1").delay(a=1, b=2)
    job = get_job(later)
    assert (job.status, job.user_id) == ("delayed", "u1")
    with pytest.raises(TypeError, match=r"unknown enqueue option\(s\) dealy .*accepted: .*delay"):
        add.enqueue(a=1, b=2, _dealy=5)
    with pytest.raises(TypeError, match="unknown enqueue option"):
        add.options(retries=2)


def test_wait_for_a_failed_job_and_a_canceled_one(jobs_env, start_worker):
    pending = add.enqueue(a=1, b=1)
    cancel_job(pending)
    assert wait_for(pending, timeout=10).status == "canceled"
    start_worker("email")
    failed = fail_times.options(max_retries=0).enqueue(key="test:fails", times=5)
    job = wait_for(failed, timeout=60)
    assert job.status == "failed" and job.error


def test_wait_for_times_out_and_names_the_state(jobs_env):
    job_id = add.enqueue(a=1, b=1)  # no worker: it stays pending
    with pytest.raises(TimeoutError, match=f"job {job_id} is still pending after 0.3s"):
        wait_for(job_id, timeout=0.3)


def test_wait_for_wakes_on_the_end_not_a_recheck(jobs_env, start_worker, monkeypatch):
    """With the re-read of a waiting job pushed out to 120 s, only the job's end (its result
    record) can end the wait early: no polling."""
    import time

    from core.api import waiting

    monkeypatch.setattr(waiting, "PENDING_RECHECK", 120.0)
    job_id = sleep_then_count.enqueue(seconds=1, key="test:wake")
    start_worker("email")
    started = time.monotonic()
    assert wait_for(job_id, timeout=300).status == "completed"
    assert time.monotonic() - started < 60
