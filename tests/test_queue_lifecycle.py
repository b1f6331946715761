"""Lifecycle actions and what workers record: fail/cancel/retry, refusal of unregistered
functions, stats, the per-user index and progress — all through real worker processes."""

from __future__ import annotations

import pytest
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from core.api.jobs import cancel_job, get_job, get_user_jobs, retry_job
from core.api.queues import ai_queue, crm_queue, email_queue
from core.config import reload_settings
from core.errors import InvalidJobStateError, JobNotFoundError
from core.platform import keys
from core.queue.job_model import JobStatus
from tests.servers import tkey, wait_until

pytestmark = pytest.mark.cluster_too  # on standalone Redis and in cluster mode (tests/conftest.py)


def final(job_id, timeout=30):
    return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=timeout,
                      message=f"job {job_id} to end")


def test_fail_job_without_retry_records_the_reason(jobs_env):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2}, max_retries=2)
    job = email_queue.fail_job(job_id, "customer unsubscribed", retry=False)
    assert job.status == JobStatus.FAILED and job.error == "customer unsubscribed"
    assert email_queue.get_stats()["pending_jobs"] == 0
    assert email_queue.get_stats()["failed_jobs"] == 1


def test_fail_job_with_retry_requeues_after_backoff(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2}, max_retries=2)
    job = email_queue.fail_job(job_id, "provider hiccup", retry=True)
    assert job.status == JobStatus.RETRYING and job.retry_count == 1 and job.error == "provider hiccup"
    assert email_queue.get_stats()["delayed_jobs"] == 1
    start_worker("email")
    assert final(job_id).status == JobStatus.COMPLETED
    assert get_job(job_id).result == 3 and get_job(job_id).error is None


def test_fail_job_on_finished_job_is_a_conflict(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    start_worker("email", "--burst").wait(60)
    with pytest.raises(InvalidJobStateError, match="is completed; only pending"):
        email_queue.fail_job(job_id, "too late")


def test_cancel_pending_and_delayed_jobs(jobs_env, start_worker):
    pending = email_queue.enqueue_job("record_run", {"key": tkey("ran"), "value": "pending"})
    delayed = email_queue.enqueue_job("record_run", {"key": tkey("ran"), "value": "delayed"}, delay=1)
    assert cancel_job(pending).status == JobStatus.CANCELED
    assert email_queue.cancel_job(delayed).status == JobStatus.CANCELED
    stats = email_queue.get_stats()
    assert (stats["pending_jobs"], stats["delayed_jobs"], stats["canceled_jobs"]) == (0, 0, 2)
    start_worker("email")
    control = email_queue.enqueue_job("record_run", {"key": tkey("ran"), "value": "control"}, delay=2)
    final(control)
    assert jobs_env.client().lrange(tkey("ran"), 0, -1) == [b"control"]


def test_cancel_running_or_finished_job_is_a_conflict(jobs_env, start_worker):
    running = email_queue.enqueue_job("sleep_then_count", {"seconds": 3, "key": tkey("sleep")})
    start_worker("email")
    wait_until(lambda: get_job(running).status == JobStatus.RUNNING, timeout=20)
    with pytest.raises(InvalidJobStateError, match="is running"):
        cancel_job(running)
    assert final(running).status == JobStatus.COMPLETED
    with pytest.raises(InvalidJobStateError, match="is completed"):
        cancel_job(running)
    with pytest.raises(JobNotFoundError, match="does not exist"):
        cancel_job("no-such-job")


def test_retry_job_runs_a_failed_job_again(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("fail_times", {"key": tkey("once"), "times": 1}, max_retries=0)
    start_worker("email")
    failed = final(job_id)
    assert failed.status == JobStatus.FAILED and "planned failure 1 of 1" in failed.error
    with pytest.raises(InvalidJobStateError, match="only failed jobs"):
        retry_job(email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=60))
    again = retry_job(job_id)
    assert again.status in (JobStatus.RETRYING, JobStatus.RUNNING, JobStatus.COMPLETED)
    done = wait_until(lambda: (j := get_job(job_id)).status == JobStatus.COMPLETED and j, timeout=30)
    assert done.result == {"attempts": 2} and done.retry_count == 1


def test_retries_exhausted_end_failed_with_the_last_error(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("fail_times", {"key": tkey("always"), "times": 10}, max_retries=2)
    start_worker("email")
    job = final(job_id, timeout=40)
    assert job.status == JobStatus.FAILED and job.retry_count == 2
    assert "planned failure 3 of 10" in job.error
    assert int(jobs_env.client().get(tkey("always"))) == 3


def test_worker_refuses_a_job_naming_an_unregistered_function(jobs_env, start_worker, tmp_path, redis_mode):
    if redis_mode == "cluster":
        pytest.skip("the job is made by RQ's own Queue, which has no cluster support (README: Redis Cluster)")
    marker = tmp_path / "pwned"
    raw = Queue(email_queue.name, connection=jobs_env.client(), serializer=JSONSerializer)
    job = raw.enqueue_call("os.system", args=(f"touch {marker}",), meta={"max_retries": 3}, retry=Retry(max=3))
    start_worker("email")
    refused = final(job.id)
    assert refused.status == JobStatus.FAILED
    assert "refused to run 'os.system'" in refused.error and "registered:" in refused.error
    assert refused.retry_count == 0 and refused.max_retries == 3  # refused, not retried
    assert not marker.exists()
    # The worker is still alive and serving.
    assert final(email_queue.enqueue_job("add", {"a": 1, "b": 1})).result == 2


def test_stats_after_a_mixed_run(jobs_env, start_worker):
    done = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(3)]
    failed = email_queue.enqueue_job("always_fail", {"message": "boom"})
    retried = email_queue.enqueue_job("fail_times", {"key": tkey("mixed"), "times": 1}, max_retries=1)
    canceled = email_queue.enqueue_job("add", {"a": 0, "b": 0})
    cancel_job(canceled)
    start_worker("email")
    for job_id in [*done, failed, retried]:
        final(job_id)
    email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=600)
    stats = email_queue.get_stats()
    assert stats["completed_jobs"] == 4 and stats["failed_jobs"] == 1 and stats["canceled_jobs"] == 1
    assert stats["delayed_jobs"] == 1 and stats["pending_jobs"] == 0 and stats["active_jobs"] == 0
    assert stats["total_jobs"] == 7 and stats["total_results"] == 5 and stats["retried_jobs"] == 1
    assert stats["workers"] == 1
    assert ai_queue.get_stats()["total_jobs"] == 0 and crm_queue.get_stats()["workers"] == 0


def test_user_recent_jobs_newest_first_bounded_and_expiring(jobs_env, monkeypatch):
    monkeypatch.setenv("JOBS_USER_INDEX_SIZE", "5")
    monkeypatch.setenv("JOBS_USER_INDEX_TTL", "100")
    reload_settings()
    ids = [email_queue.enqueue_job("add", {"a": i, "b": 0}, user_id="u7") for i in range(8)]
    ai_queue.enqueue_job("ai_echo", {"text": "other user"}, user_id="u8")
    recent = get_user_jobs("u7", limit=20)
    assert [j.job_id for j in recent] == list(reversed(ids))[:5]
    assert [j.job_id for j in get_user_jobs("u7", limit=2)] == list(reversed(ids))[:2]
    client = jobs_env.client()
    assert client.llen(keys.user_jobs("u7")) == 5  # fikiri:user:u7:jobs ({fikiri}:user:u7:jobs in cluster mode)
    assert 0 < client.ttl(keys.user_jobs("u7")) <= 100
    assert [j.task_name for j in get_user_jobs("u8")] == ["ai_echo"]


def test_progress_reported_by_a_task_is_visible(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("with_progress", {"steps": 4})
    start_worker("email")
    job = final(job_id)
    assert job.result == 4 and job.progress == {"done": 4, "total": 4}


def test_wait_for_blocks_until_the_job_ends_and_times_out_while_it_runs(jobs_env, start_worker):
    slow = email_queue.enqueue_job("sleep_then_count", {"seconds": 3, "key": tkey("wait")})
    with pytest.raises(TimeoutError, match="still pending"):
        email_queue.wait_for(slow, timeout=0.3)
    quick = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    start_worker("email", "--concurrency", "1")
    assert email_queue.wait_for(quick, timeout=30).result == 5
    assert email_queue.wait_for(slow, timeout=30).status == JobStatus.COMPLETED
    assert int(jobs_env.client().get(tkey("wait"))) == 1
