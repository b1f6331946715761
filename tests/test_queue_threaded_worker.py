"""The threaded worker (--worker-class threaded): several I/O-bound jobs at once in one process,
with the fork worker's guarantees — warm stop, cold stop requeues, SIGKILL loses nothing,
per-job timeouts, retries, refusal of unregistered functions."""

from __future__ import annotations

import signal
import time

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.queue.job_model import JobStatus
from tests.servers import wait_until

THREADED = ("email", "--worker-class", "threaded", "--concurrency", "4")


def status(job_id):
    return get_job(job_id).status


def test_runs_jobs_concurrently(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("sleep_then_count", {"seconds": 1.5, "key": "test:par"}) for _ in range(4)]
    start_worker(*THREADED)
    wait_until(lambda: int(jobs_env.client().get("test:par:started") or 0) == 4, timeout=20,
               message="all four jobs to be running at once")
    assert jobs_env.client().get("test:par") is None  # none finished yet: they overlap
    for job_id in ids:
        wait_until(lambda j=job_id: status(j) == JobStatus.COMPLETED, timeout=20)
    assert int(jobs_env.client().get("test:par")) == 4


def test_results_retries_and_failures(jobs_env, start_worker):
    ok = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(20)]
    retried = email_queue.enqueue_job("fail_times", {"key": "test:tr", "times": 1}, max_retries=1)
    failed = email_queue.enqueue_job("always_fail", {"message": "nope"})
    start_worker(*THREADED)
    for job_id in [*ok, retried, failed]:
        wait_until(lambda j=job_id: status(j).is_final, timeout=30)
    assert [get_job(j).result for j in ok] == [i + 1 for i in range(20)]
    assert get_job(retried).result == {"attempts": 2} and get_job(retried).retry_count == 1
    assert status(failed) == JobStatus.FAILED and "nope" in get_job(failed).error
    stats = email_queue.get_stats()
    assert stats["completed_jobs"] == 21 and stats["failed_jobs"] == 1 and stats["active_jobs"] == 0


def test_timeout_fails_a_job_in_its_thread(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("with_progress", {"steps": 10_000_000}, timeout=1)
    start_worker(*THREADED)
    wait_until(lambda: status(job_id) == JobStatus.FAILED, timeout=30)
    assert "JobTimeoutException" in get_job(job_id).error


def test_sigterm_finishes_every_job_in_hand(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("sleep_then_count", {"seconds": 2, "key": "test:warm"}) for _ in range(3)]
    later = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    worker = start_worker("email", "--worker-class", "threaded", "--concurrency", "3")
    wait_until(lambda: int(jobs_env.client().get("test:warm:started") or 0) == 3, timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert [status(j) for j in ids] == [JobStatus.COMPLETED] * 3
    assert status(later) == JobStatus.PENDING


def test_second_signal_requeues_every_job_in_hand(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("sleep_then_count", {"seconds": 5, "key": "test:cold"}, max_retries=0)
           for _ in range(2)]
    worker = start_worker("email", "--worker-class", "threaded", "--concurrency", "2")
    wait_until(lambda: int(jobs_env.client().get("test:cold:started") or 0) == 2, timeout=20)
    worker.signal(signal.SIGTERM)
    time.sleep(1.2)
    worker.signal(signal.SIGTERM)
    worker.wait(30)
    assert [status(j) for j in ids] == [JobStatus.PENDING] * 2
    start_worker(*THREADED)
    for job_id in ids:
        wait_until(lambda j=job_id: status(j) == JobStatus.COMPLETED, timeout=30)
    assert int(jobs_env.client().get("test:cold")) == 2


def test_sigkill_loses_nothing(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("sleep_then_count", {"seconds": 3, "key": "test:kill"}, max_retries=2)
           for _ in range(3)]
    victim = start_worker(*THREADED)
    wait_until(lambda: int(jobs_env.client().get("test:kill:started") or 0) == 3, timeout=20)
    victim.kill_hard()
    start_worker(*THREADED)
    for job_id in ids:
        wait_until(lambda j=job_id: status(j) == JobStatus.COMPLETED, timeout=60)
    assert int(jobs_env.client().get("test:kill")) == 3
    assert all(get_job(j).retry_count == 0 and get_job(j).stalls == 1 for j in ids)  # stalls, not retries
