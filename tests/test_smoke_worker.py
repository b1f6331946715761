"""End to end through a real worker process: enqueue, run, read status."""

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.queue.job_model import JobStatus
from tests.servers import wait_until


def test_job_runs_in_worker_and_status_is_readable(start_worker):
    job_id = email_queue.enqueue_job("add", {"a": 2, "b": 3}, user_id="u1")
    assert get_job(job_id).status == JobStatus.PENDING
    start_worker("email")
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=20)
    assert job.result == 5
    assert job.user_id == "u1"
    assert job.started_at and job.completed_at and job.completed_at >= job.started_at


def test_retries_then_succeeds_with_growing_delays(start_worker, jobs_env):
    # without jitter (the default is full jitter: tests/test_retry_policy.py), the waits are exact
    job_id = email_queue.enqueue_job("fail_times", {"key": "test:ft", "times": 2}, max_retries=3, retry_jitter="none")
    start_worker("email")
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=30)
    assert job.result == {"attempts": 3}
    assert job.retry_count == 2
    times = [float(t) for t in jobs_env.client().lrange("test:ft:at", 0, -1)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # base 1 s, then 2 s
