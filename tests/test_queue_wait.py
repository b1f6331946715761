"""wait_for wakes on the job's end (core/api/waiting.py): the final Job whatever the order of the
wait and the end, timeouts honoured, many waiters at once, Redis lost, the fallback. A real
worker, a real Redis. Latency is measured in bench/wait_latency.py, never asserted here."""

from __future__ import annotations

import threading
import time

import pytest

from core.api import waiting
from core.api.jobs import cancel_job
from core.api.queues import email_queue
from core.errors import InvalidPayloadError, JobNotFoundError, QueueUnavailableError
from core.platform import connection
from core.platform.connection import get_redis, redis_available, reset_connections
from core.queue.job_model import JobStatus
from tests.conftest import finished
from tests.servers import wait_until
from tests.task_fixtures import add, always_fail, fail_times, sleep_then_count

NO_RECHECK = 100.0  # s: re-reads pushed out this far, so only the end itself can wake a wait


@pytest.fixture
def no_recheck(monkeypatch):
    """No re-read before NO_RECHECK s: a wait that returns sooner was woken by the end."""
    monkeypatch.setattr(waiting, "PENDING_RECHECK", NO_RECHECK)
    monkeypatch.setattr(waiting, "BLOCK_MAX", NO_RECHECK)
    monkeypatch.setattr(connection, "BLOCK_MAX", NO_RECHECK)  # the blocking client's socket outlives a read
    reset_connections()
    yield
    reset_connections()


def test_a_job_that_ended_before_the_wait_is_returned_at_once(jobs_env, start_worker):
    job_id = add.enqueue(a=2, b=3)
    start_worker("email")
    finished(job_id)
    job = email_queue.wait_for(job_id, timeout=0)  # no time left: the snapshot alone answers
    assert (job.status, job.result, job.mode) == (JobStatus.COMPLETED, 5, "redis")
    assert job.wait(timeout=5).result == 5  # Job.wait is the same wait


def test_a_wait_begun_after_the_claim_wakes_on_the_end(jobs_env, start_worker, no_recheck):
    """The case the old token missed (claim.lua decides on the token before the wait marks the
    job): the job is already running when the wait starts."""
    job_id = sleep_then_count.enqueue(seconds=1, key="test:claimed")
    start_worker("email")
    wait_until(lambda: get_redis().get("test:claimed:started"), timeout=30, message="the job to start")
    started = time.monotonic()
    job = email_queue.wait_for(job_id, timeout=2 * NO_RECHECK)
    assert (job.status, job.result) == (JobStatus.COMPLETED, "slept")
    assert time.monotonic() - started < NO_RECHECK / 2, "woken by a re-read, not by the end"


def test_a_wait_begun_before_the_worker_wakes_on_the_end(jobs_env, start_worker, no_recheck):
    job_id = add.enqueue(a=20, b=22)
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(email_queue.wait_for(job_id, timeout=2 * NO_RECHECK)))
    waiter.start()
    start_worker("email")
    waiter.join(NO_RECHECK / 2)
    assert not waiter.is_alive(), "woken by a re-read, not by the end"
    assert result[0].result == 42 and result[0].status == JobStatus.COMPLETED


def test_failed_retried_and_canceled_ends(jobs_env, start_worker):
    canceled = add.enqueue(a=1, b=1)
    cancel_job(canceled)
    assert email_queue.wait_for(canceled, timeout=10).status == JobStatus.CANCELED
    start_worker("email")
    failed = always_fail.enqueue(message="no luck")
    job = email_queue.wait_for(failed, timeout=60)
    assert job.status == JobStatus.FAILED and "ValueError: no luck" in job.error
    retried = fail_times.options(max_retries=2).enqueue(key="test:wait-retry", times=1)
    job = email_queue.wait_for(retried, timeout=60)  # the failed attempt is not its end
    assert (job.status, job.result, job.retry_count) == (JobStatus.COMPLETED, {"attempts": 2}, 1)


def test_a_cancel_of_a_waiting_job_ends_the_wait(jobs_env):
    job_id = add.enqueue(a=1, b=1)  # no worker: it stays pending
    threading.Timer(0.3, cancel_job, args=(job_id,)).start()
    assert email_queue.wait_for(job_id, timeout=30).status == JobStatus.CANCELED


def test_timeouts_are_honoured_and_bad_ones_refused(jobs_env):
    job_id = add.enqueue(a=1, b=1)  # no worker: it stays pending
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {job_id} is still pending after 0.3s"):
        email_queue.wait_for(job_id, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(TimeoutError, match="still pending after 0s"):
        email_queue.wait_for(job_id, timeout=0)
    for bad in (-1, float("nan"), float("inf"), "5", None, True):
        with pytest.raises(InvalidPayloadError, match="accepted is a finite number of seconds >= 0"):
            email_queue.wait_for(job_id, timeout=bad)
    with pytest.raises(JobNotFoundError, match="no-such-job"):
        email_queue.wait_for("no-such-job", timeout=1)


def test_many_concurrent_waiters(jobs_env, start_worker):
    """60 threads: 50 on jobs of their own, 10 more on one shared job; every wait gets its own
    job's end."""
    ids = [add.enqueue(a=i, b=1000) for i in range(50)]
    shared = add.enqueue(a=-1, b=-1)
    results: dict[int, object] = {}

    def wait(index: int, job_id: str) -> None:
        results[index] = email_queue.wait_for(job_id, timeout=120)

    threads = [threading.Thread(target=wait, args=(i, job_id)) for i, job_id in enumerate(ids)]
    threads += [threading.Thread(target=wait, args=(50 + i, shared)) for i in range(10)]
    for thread in threads:
        thread.start()
    start_worker("email", "--concurrency", "4")
    for thread in threads:
        thread.join(150)
    assert [results[i].result for i in range(50)] == [i + 1000 for i in range(50)]
    assert [results[50 + i].result for i in range(10)] == [-2] * 10
    assert all(job.status == JobStatus.COMPLETED and job.mode == "redis" for job in results.values())


def test_redis_lost_for_the_whole_wait_is_unavailable_not_a_timeout(jobs_env):
    job_id = add.enqueue(a=1, b=1)
    jobs_env.stop()
    with pytest.raises(QueueUnavailableError, match=f"could not tell whether job {job_id} has ended.*unreachable"):
        email_queue.wait_for(job_id, timeout=0.5)


def test_a_wait_outlives_a_redis_restart(jobs_env, start_worker):
    """Redis restarts (with its AOF) during the wait: the wait reconnects and returns the end."""
    jobs_env.appendonly = True
    jobs_env.restart()
    reset_connections()
    job_id = add.enqueue(a=3, b=4)
    waiter: list = []
    thread = threading.Thread(target=lambda: waiter.append(email_queue.wait_for(job_id, timeout=90)))
    thread.start()
    time.sleep(0.3)  # the wait is blocked on Redis now (or about to be: either way it must survive)
    jobs_env.restart()
    start_worker("email")
    thread.join(120)
    assert waiter and (waiter[0].result, waiter[0].mode) == (7, "redis")


@pytest.mark.fallback
def test_a_fallback_job_is_waited_on_in_the_spool(jobs_env):
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5)
    job_id = email_queue.enqueue_job("add", {"a": 20, "b": 22})
    job = email_queue.wait_for(job_id, timeout=30)
    assert (job.mode, job.status, job.result) == ("fallback", JobStatus.COMPLETED, 42)
    later = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=60)
    with pytest.raises(TimeoutError, match=f"job {later} is still delayed"):
        email_queue.wait_for(later, timeout=0.3)
