"""The threading fallback: with Redis stopped, enqueue still answers at once, the job runs
in-process with retries, its status is readable; when Redis returns, jobs go to Redis again."""

from __future__ import annotations

import time

import pytest

from core.api.jobs import get_job, get_user_jobs
from core.api.queues import email_queue
from core.platform.connection import redis_available
from core.queue.job_model import JobStatus
from tests.servers import wait_until

pytestmark = [pytest.mark.fallback, pytest.mark.cluster_too]  # cluster_too: also in cluster mode (tests/conftest.py)


def test_enqueue_falls_back_fast_and_job_completes(jobs_env):
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5, message="health check to notice the outage")
    started = time.perf_counter()
    job_id = email_queue.enqueue_job("add", {"a": 20, "b": 22}, user_id="fb-user")
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"fallback enqueue took {elapsed * 1000:.1f} ms"
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=10)
    assert job.mode == "fallback" and job.result == 42 and job.user_id == "fb-user"
    assert [j.job_id for j in get_user_jobs("fb-user")] == [job_id]


def test_first_enqueue_after_an_unnoticed_outage_still_falls_back(jobs_env):
    assert redis_available()
    jobs_env.stop()  # the cached health answer still says "up"
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    job = wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=10)
    assert job.mode == "fallback" and job.status == JobStatus.COMPLETED


def test_fallback_retries_with_backoff(jobs_env):
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5)
    job_id = email_queue.enqueue_job("always_fail", {"message": "nope"}, max_retries=2)
    retrying = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.RETRYING and j, timeout=10)
    assert retrying.retry_count >= 1 and "nope" in retrying.error
    failed = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.FAILED and j, timeout=15)
    assert failed.retry_count == 2 and "ValueError: nope" in failed.error


def test_new_jobs_go_to_redis_again_when_it_returns(jobs_env, start_worker):
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5)
    in_fallback = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    jobs_env.start()
    wait_until(redis_available, timeout=10, message="health check to see Redis again")
    in_redis = email_queue.enqueue_job("add", {"a": 3, "b": 4})
    assert get_job(in_redis).mode == "redis"
    start_worker("email")
    done = wait_until(lambda: (j := get_job(in_redis)) and j.status == JobStatus.COMPLETED and j, timeout=20)
    assert done.result == 7
    assert get_job(in_fallback).mode == "fallback" and get_job(in_fallback).result == 3


def test_cancel_and_stop_of_spooled_jobs_record_why_and_a_second_time_is_a_conflict(jobs_env):
    from core.api.jobs import cancel_job, stop_job
    from core.errors import InvalidJobStateError

    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5)
    later = [email_queue.enqueue_job("add", {"a": i, "b": 1}, delay=60) for i in range(2)]
    canceled = cancel_job(later[0])
    assert canceled.status == JobStatus.CANCELED and canceled.error == "canceled" and canceled.mode == "fallback"
    stopped = stop_job(later[1], by="ops")
    assert stopped.status == JobStatus.CANCELED and stopped.error == "stopped by ops"
    assert get_job(later[1]).error == "stopped by ops"  # as every process reads it from the spool
    for again in (lambda: cancel_job(later[0]), lambda: stop_job(later[1], by="ops")):
        with pytest.raises(InvalidJobStateError, match="is canceled"):
            again()
    done = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    wait_until(lambda: get_job(done).status == JobStatus.COMPLETED, timeout=10)
    with pytest.raises(InvalidJobStateError, match="is completed in the in-process fallback"):
        stop_job(done, by="ops")
