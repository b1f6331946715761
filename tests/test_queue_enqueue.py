"""Enqueue options and validation: each option does what DESIGN.md says; bad input fails in the caller."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import InvalidPayloadError, PayloadTooLargeError, UnknownQueueError, UnknownTaskError
from core.job_model import JobStatus
from core.redis_queues import InvalidJobIdError, ai_queue, crm_queue, email_queue, get_job, get_queue
from core.rq_job import SERIALIZER, TaskJob
from tests.servers import wait_until


def rq_job(redis_server, job_id):
    return TaskJob.fetch(job_id, connection=redis_server.client(), serializer=SERIALIZER)


def test_unknown_task_names_queue_and_registered_tasks(jobs_env):
    with pytest.raises(UnknownTaskError) as err:
        email_queue.enqueue_job("proces_gmail_sync", {})
    message = str(err.value)
    assert "'proces_gmail_sync'" in message and "queue email" in message
    assert "process_gmail_sync" in message and "send_email" in message


def test_task_registered_on_another_queue_says_where(jobs_env):
    with pytest.raises(UnknownTaskError, match="registered on queue ai"):
        email_queue.enqueue_job("ai_echo", {"text": "x"})


@pytest.mark.parametrize("payload, fragment", [
    ({"a": {1, 2}}, "not JSON-serialisable"),
    ({"when": datetime.now()}, "not JSON-serialisable"),
    ({"x": math.nan}, "not JSON-serialisable"),
    (["a", "b"], "must be a JSON object"),
    ({"not valid": 1}, "not a valid keyword argument name"),
])
def test_non_json_payloads_are_rejected_at_enqueue(jobs_env, payload, fragment):
    with pytest.raises(InvalidPayloadError, match=fragment):
        email_queue.enqueue_job("add", payload)
    assert jobs_env.client().llen(email_queue.rq_queue.key) == 0


def test_oversized_payload_is_rejected_with_the_limit(jobs_env, monkeypatch):
    with pytest.raises(PayloadTooLargeError) as err:
        email_queue.enqueue_job("record_run", {"key": "k", "value": "x" * 70_000})
    assert "65536-byte limit" in str(err.value)


@pytest.mark.parametrize("options, fragment", [
    ({"max_retries": -1}, "max_retries"),
    ({"max_retries": "3"}, "max_retries"),
    ({"priority": "urgent"}, "accepted: high, normal"),
    ({"timeout": 0}, "timeout"),
    ({"delay": -5}, "delay"),
    ({"delay": "soon"}, "delay"),
    ({"delay": 1, "at": datetime.now(UTC)}, "not both"),
    ({"at": "tomorrow"}, "at must be a datetime"),
    ({"user_id": "has space"}, "user_id"),
])
def test_bad_options_are_rejected(jobs_env, options, fragment):
    with pytest.raises(InvalidPayloadError, match=fragment):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, **options)


def test_malformed_job_id_is_rejected(jobs_env):
    with pytest.raises(InvalidJobIdError, match="malformed job id"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id="../etc passwd")


def test_unknown_queue_lists_accepted_names(jobs_env):
    with pytest.raises(UnknownQueueError, match="accepted: email"):
        get_queue("mail")
    assert get_queue("fikiri:crm") is crm_queue and get_queue("ai") is ai_queue


def test_default_timeouts_per_queue_and_explicit_timeout(jobs_env):
    ids = {
        "email": email_queue.enqueue_job("add", {"a": 1, "b": 1}),
        "ai": ai_queue.enqueue_job("ai_echo", {"text": "x"}),
        "crm": crm_queue.enqueue_job("crm_echo", {"text": "x"}),
    }
    assert {q: rq_job(jobs_env, i).timeout for q, i in ids.items()} == {"email": 300, "ai": 120, "crm": 30}
    explicit = email_queue.enqueue_job("add", {"a": 1, "b": 1}, timeout=7)
    assert rq_job(jobs_env, explicit).timeout == 7


def test_retry_backoff_grows_and_is_capped(jobs_env, monkeypatch):
    monkeypatch.setenv("JOBS_RETRY_BACKOFF_BASE", "3")
    monkeypatch.setenv("JOBS_RETRY_BACKOFF_CAP", "20")
    from core.config import reload_settings

    reload_settings()
    job_id = email_queue.enqueue_job("fail_times", {"key": "k", "times": 1}, max_retries=5)
    job = rq_job(jobs_env, job_id)
    assert job.retries_left == 5
    assert job.retry_intervals == [3, 6, 12, 20, 20]


def test_caller_chosen_job_id_enqueued_twice_is_one_job(jobs_env, start_worker):
    first = email_queue.enqueue_job("record_run", {"key": "test:runs", "value": "once"}, job_id="invoice-42")
    second = email_queue.enqueue_job("record_run", {"key": "test:runs", "value": "once"}, job_id="invoice-42")
    assert first == second == "invoice-42"
    assert jobs_env.client().llen(email_queue.rq_queue.key) == 1
    start_worker("email", "--burst").wait(60)
    assert jobs_env.client().lrange("test:runs", 0, -1) == [b"once"]
    # Still remembered after it ran: a third enqueue does not run it again.
    email_queue.enqueue_job("record_run", {"key": "test:runs", "value": "once"}, job_id="invoice-42")
    assert jobs_env.client().llen(email_queue.rq_queue.key) == 0


def test_delay_seconds_timedelta_and_at_make_delayed_jobs(jobs_env):
    by_seconds = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=30)
    by_timedelta = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=timedelta(minutes=1))
    by_at = email_queue.enqueue_job("add", {"a": 1, "b": 1}, at=datetime.now(UTC) + timedelta(hours=1))
    for job_id in (by_seconds, by_timedelta, by_at):
        assert get_job(job_id).status == JobStatus.DELAYED
    assert email_queue.get_stats()["delayed_jobs"] == 3
    assert email_queue.get_stats()["pending_jobs"] == 0
    scheduled = jobs_env.client().zrange(f"rq:scheduled:{email_queue.name}", 0, -1, withscores=True)
    order = [job_id.decode() for job_id, _ in scheduled]
    assert order == [by_seconds, by_timedelta, by_at]


def test_delayed_job_runs_after_its_delay(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("add", {"a": 2, "b": 2}, delay=2)
    start_worker("email")
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=30)
    assert job.result == 4
    assert job.started_at - job.created_at >= 1.9


def test_high_priority_jumps_ahead_of_earlier_jobs(jobs_env, start_worker):
    for index in range(3):
        email_queue.enqueue_job("record_run", {"key": "test:order", "value": f"normal-{index}"})
    email_queue.enqueue_job("record_run", {"key": "test:order", "value": "urgent"}, priority="high")
    start_worker("email", "--burst").wait(60)
    order = [v.decode() for v in jobs_env.client().lrange("test:order", 0, -1)]
    assert order == ["urgent", "normal-0", "normal-1", "normal-2"]


def test_user_id_is_recorded_on_the_job(jobs_env):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id=42)
    job = get_job(job_id)
    assert job.user_id == "42" and job.max_retries == 0 and job.mode == "redis"
    assert job.payload == {"a": 1, "b": 1} and job.task_name == "add" and job.queue == "email"


def test_enqueue_many_validates_everything_then_writes_once(jobs_env, start_worker):
    with pytest.raises(InvalidPayloadError):
        email_queue.enqueue_many("add", [{"a": 1, "b": 1}, {"a": {1}}])
    assert email_queue.get_stats()["pending_jobs"] == 0
    ids = email_queue.enqueue_many("add", [{"a": i, "b": i} for i in range(50)], user_id="bulk")
    assert len(set(ids)) == 50 and email_queue.get_stats()["total_jobs"] == 50
    start_worker("email", "--burst").wait(60)
    assert [get_job(i).result for i in ids] == [2 * i for i in range(50)]
