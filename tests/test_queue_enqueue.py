"""Enqueue options and validation: each option does what DESIGN.md says; bad input fails in the caller."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core.api.jobs import get_job
from core.api.queues import ai_queue, crm_queue, email_queue, get_queue
from core.errors import InvalidPayloadError, PayloadTooLargeError, UnknownQueueError, UnknownTaskError
from core.platform import keys
from core.queue.backoff import retry_delays
from core.queue.job_model import JobStatus
from core.queue.job_options import InvalidJobIdError, new_job_id
from tests.servers import wait_until


def rq_job(redis_server, job_id):
    """Read our job with RQ's own Job.fetch: the layout stays RQ's, so RQ tooling sees our jobs."""
    return RQJob.fetch(job_id, connection=redis_server.client(), serializer=JSONSerializer)


def queue_length(redis_server, queue=None) -> int:
    return redis_server.client().llen(keys.queue((queue or email_queue).name))


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
    assert queue_length(jobs_env) == 0


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
    ({"unique_for": 0}, "unique_for"),
    ({"unique_key": "k"}, "unique_key needs unique_for"),
])
def test_bad_options_are_rejected(jobs_env, options, fragment):
    with pytest.raises(InvalidPayloadError, match=fragment):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, **options)


def test_malformed_job_id_is_rejected(jobs_env):
    with pytest.raises(InvalidJobIdError, match="malformed job id"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id="../etc passwd")
    # "$" in a pattern matches before a final newline: the rules use fullmatch, so these are refused
    with pytest.raises(InvalidJobIdError, match="malformed job id"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id="order-42\n")
    with pytest.raises(InvalidPayloadError, match="malformed user_id"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, user_id="u1\n")


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
    assert retry_delays(5) == [3, 6, 12, 20, 20]
    assert jobs_env.client().hget(keys.job(job_id), "fk_max") == b"5"
    assert rq_job(jobs_env, job_id).func_name == "fail_times"


def test_caller_chosen_job_id_is_one_job_while_live_and_a_new_run_once_ended(jobs_env, start_worker):
    first = email_queue.enqueue_job("record_run", {"key": "test:runs", "value": "one"}, job_id="invoice-42")
    second = email_queue.enqueue_job("record_run", {"key": "test:runs", "value": "one"}, job_id="invoice-42")
    assert first == second == "invoice-42"
    assert queue_length(jobs_env) == 1 and email_queue.get_stats()["total_jobs"] == 1
    start_worker("email", "--burst").wait(60)
    assert jobs_env.client().lrange("test:runs", 0, -1) == [b"one"]
    # Ended: the same id starts a new run (the old outcome is replaced), it does not starve.
    email_queue.enqueue_job("record_run", {"key": "test:runs", "value": "two"}, job_id="invoice-42")
    job = get_job("invoice-42")
    assert job.status == JobStatus.PENDING and job.result is None and job.payload["value"] == "two"
    assert queue_length(jobs_env) == 1 and email_queue.get_stats()["completed_jobs"] == 0
    start_worker("email", "--burst").wait(60)
    assert jobs_env.client().lrange("test:runs", 0, -1) == [b"one", b"two"]
    assert get_job("invoice-42").result == "two" and email_queue.get_stats()["total_jobs"] == 2


def test_a_failed_job_id_can_run_again(jobs_env, start_worker):
    email_queue.enqueue_job("always_fail", {"message": "first"}, job_id="classify-7")
    start_worker("email", "--burst").wait(60)
    assert get_job("classify-7").status == JobStatus.FAILED
    email_queue.enqueue_job("add", {"a": 1, "b": 1}, job_id="classify-7")
    start_worker("email", "--burst").wait(60)
    assert get_job("classify-7").result == 2 and email_queue.get_stats()["failed_jobs"] == 0


def test_unique_for_allows_one_job_per_window(jobs_env, start_worker):
    first = email_queue.enqueue_job("add", {"a": 1, "b": 2}, unique_for=2)
    assert email_queue.enqueue_job("add", {"a": 1, "b": 2}, unique_for=2) == first
    other = email_queue.enqueue_job("add", {"a": 9, "b": 9}, unique_for=2)  # another payload: its own window
    keyed = email_queue.enqueue_job("add", {"a": 5, "b": 5}, unique_for=2, unique_key="digest-u1")
    assert email_queue.enqueue_job("add", {"a": 6, "b": 6}, unique_for=2, unique_key="digest-u1") == keyed
    assert len({first, other, keyed}) == 3 and queue_length(jobs_env) == 3
    start_worker("email", "--burst").wait(60)
    # Still inside the window after it ran: nothing new. After the window: a new job.
    assert email_queue.enqueue_job("add", {"a": 1, "b": 2}, unique_for=2) == first
    wait_until(lambda: not jobs_env.client().exists(keys.unique("email", "add", {"a": 1, "b": 2}, None)), timeout=5)
    assert email_queue.enqueue_job("add", {"a": 1, "b": 2}, unique_for=2) != first


@pytest.mark.parametrize("bad_id", ["order.42", "invoice-7:x", "a b", "", "x" * 129, "naïve", 42])
def test_job_ids_follow_rq3s_rule(jobs_env, bad_id):
    with pytest.raises(InvalidJobIdError, match="letters, digits, '_' or '-'"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id=bad_id)
    with pytest.raises(InvalidJobIdError):
        get_job(bad_id)
    assert queue_length(jobs_env) == 0


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
    start_worker("email", "--burst", "--concurrency", "1").wait(60)
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


def test_an_enqueue_without_options_takes_the_tasks_options_checked_once(jobs_env):
    """The no-option path (issue 22 item 5) reuses one checked value per task and settings; it
    equals a full check, a task with an expires is checked at each call, and a flat payload is
    copied, not parsed, with the same result as the JSON round trip."""
    from core.queue import task_registry
    from core.queue.job_options import check_options, default_options, encode_payload_json, is_default

    spec = task_registry.get("email", "add")
    assert default_options(spec) is default_options(spec) and default_options(spec) == check_options(spec)
    assert is_default({"max_retries": None, "priority": "normal"})
    assert not is_default({"priority": "high"}) and not is_default({"max_retries": 0})
    timed = dataclasses.replace(spec, expires=60)
    first, second = default_options(timed), default_options(timed)
    assert first is not second and first.expires_at is not None
    flat = {"s": "x", "i": 1, "f": 0.5, "b": True, "n": None}
    kwargs, text = encode_payload_json(flat, 1000)
    assert kwargs == flat and kwargs is not flat and json.loads(text) == flat
    nested, _ = encode_payload_json({"t": (1, 2)}, 1000)
    assert nested == {"t": [1, 2]}
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    assert len(job_id) == 32 and int(job_id, 16) >= 0
    assert rq_job(jobs_env, job_id).kwargs == {"a": 1, "b": 2}


def _snapshot(client, job_id: str) -> dict:
    """Every key and value in Redis, with the job's id and the clock's values masked."""
    def mask(value):
        text = value.decode() if isinstance(value, bytes) else str(value)
        return "T" if len(text) == 27 and text.endswith("Z") else text.replace(job_id, "J")

    out = {}
    for key in client.scan_iter(count=1000):
        kind, name = client.type(key).decode(), mask(key)
        if kind == "hash":
            out[name] = {mask(k): mask(v) for k, v in client.hgetall(key).items()}
        elif kind == "list":
            out[name] = [mask(v) for v in client.lrange(key, 0, -1)]
        elif kind == "set":
            out[name] = sorted(mask(v) for v in client.smembers(key))
        elif kind == "zset":
            out[name] = [mask(v) for v in client.zrange(key, 0, -1)]
        elif kind == "stream":
            out[name] = [{mask(k): mask(v) for k, v in fields.items()} for _id, fields in client.xrange(key)]
        else:
            out[name] = mask(client.get(key))
        out[name + " ttl"] = client.ttl(key) > 0
    return out


@pytest.mark.parametrize("options", [{}, {"user_id": "u1"}, {"delay": 60}, {"priority": "high"},
                                     {"priority": "low", "user_id": 7, "max_retries": 2, "timeout": 9}])
def test_a_plain_enqueue_writes_what_the_general_script_writes(jobs_env, options):
    """enqueue_plain.lua (no id of the caller's, no unique window, dependencies, group or batch)
    and enqueue.lua (taken here because of the caller's own id) leave the same keys and values."""
    client = jobs_env.client()
    client.flushdb()
    plain = email_queue.enqueue_job("add", {"a": 1, "b": "x" * 80}, **options)
    written = _snapshot(client, plain)
    client.flushdb()
    general = email_queue.enqueue_job("add", {"a": 1, "b": "x" * 80}, job_id=new_job_id(), **options)
    assert general != plain and _snapshot(client, general) == written
    assert rq_job(jobs_env, general).kwargs == {"a": 1, "b": "x" * 80}
