"""What we rely on from RQ's layout, checked against the installed RQ (core/queue/rq_compat.py).

Our scripts write jobs in RQ's hash layout and RQ's key names so ``rq info`` and RQ's ``Job.fetch``
see them. An RQ upgrade that changes any of these facts must fail here, not corrupt jobs."""

from __future__ import annotations

from rq import Queue
from rq.job import JOB_ID_PATTERN, Job
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer
from rq.utils import _TIMESTAMP_FORMAT

from core.api.queues import email_queue
from core.platform import keys
from core.queue import rq_compat


def test_pinned_rq_version():
    assert rq_compat.rq_version() == rq_compat.PINNED_RQ_VERSION, (
        "RQ changed: re-check core/queue/rq_compat.py and core/queue/lua against the new release, then update the pin")


def test_layout_facts_match_rq():
    assert rq_compat.TIME_FORMAT == _TIMESTAMP_FORMAT
    assert rq_compat.JOB_ID_PATTERN == JOB_ID_PATTERN.pattern


def test_key_names_are_rqs(jobs_env):
    queue = Queue(email_queue.name, connection=jobs_env.client(), serializer=JSONSerializer)
    assert keys.queue(email_queue.name) == queue.key
    assert keys.job("abc") == Job.key_for("abc")
    registries = {
        keys.scheduled: ScheduledJobRegistry, keys.started: StartedJobRegistry, keys.finished: FinishedJobRegistry,
        keys.failed: FailedJobRegistry, keys.canceled: CanceledJobRegistry,
    }
    for ours, registry in registries.items():
        assert ours(email_queue.name) == registry(queue=queue).key


def test_rq_reads_our_jobs_and_counts_our_queues(jobs_env):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2}, timeout=9)
    client = jobs_env.client()
    job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
    assert (job.func_name, job.kwargs, job.timeout, job.origin) == ("add", {"a": 1, "b": 2}, 9, email_queue.name)
    assert job.get_status().value == "queued"
    queue = Queue(email_queue.name, connection=client, serializer=JSONSerializer)
    assert queue.count == 1 and queue.job_ids == [job_id]
    # our data field is plain JSON, readable with redis-cli
    assert client.hget(keys.job(job_id), "data") == b'["add",null,[],{"a":1,"b":2}]'


# --- RQ's tools read our jobs (issue 19): rq:queues, the result record, enqueued_at, description ----
def test_result_record_and_queue_set_are_rqs():
    from rq.results import Result

    assert (rq_compat.RESULT_SUCCESSFUL, rq_compat.RESULT_FAILED, rq_compat.RESULT_STOPPED) == (
        Result.Type.SUCCESSFUL.value, Result.Type.FAILED.value, Result.Type.STOPPED.value)
    assert keys.results("abc") == Result.get_key("abc")
    assert keys.all_queues() == Queue.redis_queues_keys
    assert keys.lua_layout()["results"] + "abc" == Result.get_key("abc")


def test_description_is_rqs_call_string_cut_to_the_listpack_value_size():
    from rq.utils import get_call_string

    assert rq_compat.call_description("add", {"b": "x", "a": 1}) == get_call_string("add", (), {"b": "x", "a": 1},
                                                                                   max_length=75) == "add(a=1, b='x')"
    long = rq_compat.call_description("send_email", {"body": "y" * 500})
    assert len(long) == rq_compat.DESCRIPTION_MAX and long.startswith("send_email(body='yyy") and long.endswith("...")


def test_the_enqueue_shortcuts_write_what_rq_would():
    """The enqueue's shortcuts (issue 22 item 5) give the same bytes as the long way: the inlined
    call string, the payload's JSON spliced into ``data``, and now formatted from the clock."""
    import json
    from datetime import UTC, datetime

    from rq.utils import get_call_string

    kwargs = {"z": [1, (2, 3)], "a": "é\n'\"", "m": {"k": None}, "f": 1.5e-7, "long": "w" * 100}
    assert rq_compat.call_description("t", kwargs) == (get_call_string("t", (), kwargs, max_length=75)[:61] + "...")
    assert rq_compat.call_description("t", {"a": 1}) == get_call_string("t", (), {"a": 1}, max_length=75)
    assert rq_compat.call_description("t", {}) == "t()"
    text = json.dumps(kwargs, separators=(",", ":"))
    assert rq_compat.encode_data("t\u00e9", json.loads(text), kwargs_json=text) == rq_compat.encode_data(
        "t\u00e9", json.loads(text))
    big = {"body": "x" * 2000}
    assert rq_compat.encode_data("t", big, kwargs_json=json.dumps(big, separators=(",", ":"))) == rq_compat.encode_data(
        "t", big)
    before = datetime.now(UTC).replace(tzinfo=None)
    now = rq_compat.format_time()
    after = datetime.now(UTC).replace(tzinfo=None)
    assert before <= datetime.strptime(now, rq_compat.TIME_FORMAT) <= after and len(now) == 27


def _rq_queue_names(client) -> set[str]:
    return {q.name for q in Queue.all(connection=client, serializer=JSONSerializer)}


def test_every_queue_is_in_rq_queues_from_its_first_enqueue(jobs_env):
    from core.api.queues import ai_queue, crm_queue

    client = jobs_env.client()
    assert _rq_queue_names(client) == set()
    email_queue.enqueue_job("add", {"a": 1, "b": 2})
    ai_queue.enqueue_job("ai_echo", {"text": "later"}, delay=3600)  # delayed only
    crm_queue.enqueue_job("crm_echo", {"text": "first"}, priority="high")
    assert _rq_queue_names(client) == {email_queue.name, ai_queue.name, crm_queue.name}
    # no worker has ever served them: the enqueue script listed them
    assert client.smembers("rq:workers") == set()
    assert Queue(email_queue.name, connection=client, serializer=JSONSerializer).count == 1


def _fetch(client, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer)


def test_rq_job_api_reads_results_errors_and_times_of_a_real_worker(start_worker):
    from tests.conftest import finished

    ok = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    bad = email_queue.enqueue_job("always_fail", {"message": "smtp said no"})
    start_worker("email", "--worker-class", "simple")
    assert finished(ok).status.value == "completed" and finished(bad).status.value == "failed"
    from core.platform.connection import get_redis

    client = get_redis()
    job = _fetch(client, ok)
    assert job.get_status().value == "finished"
    assert job.return_value() == 5
    result = job.latest_result()
    assert result.type.value == rq_compat.RESULT_SUCCESSFUL and result.exc_string is None
    assert result.worker_name  # the worker that ran it
    assert job.description == "add(a=2, b=3)"
    assert job.enqueued_at is not None and job.created_at is not None and job.ended_at is not None
    assert abs((job.enqueued_at - job.created_at).total_seconds()) < 1
    assert job.enqueued_at <= job.started_at <= job.ended_at
    # the record expires with the job: the same result TTL on both keys
    job_ttl, record_ttl = client.ttl(keys.job(ok)), client.ttl(keys.results(ok))
    assert 0 < record_ttl <= job_ttl and job_ttl - record_ttl <= 1

    failed = _fetch(client, bad)
    assert failed.get_status().value == "failed"
    assert failed.return_value() is None
    record = failed.latest_result()
    assert record.type.value == rq_compat.RESULT_FAILED
    assert "smtp said no" in record.exc_string and "Traceback" in record.exc_string
    assert record.exc_string == email_queue.get_job_status(bad).error
    assert 0 < client.ttl(keys.results(bad)) <= client.ttl(keys.job(bad))


def test_rq_reads_pending_delayed_canceled_and_operator_failed(jobs_env):
    client = jobs_env.client()
    pending = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    delayed = email_queue.enqueue_job("add", {"a": 1, "b": 2}, delay=3600)
    canceled = email_queue.enqueue_job("add", {"a": 1, "b": 3})
    email_queue.cancel_job(canceled)
    by_hand = email_queue.enqueue_job("add", {"a": 1, "b": 4})
    email_queue.fail_job(by_hand, "bad address: nobody@", retry=False)

    assert _fetch(client, pending).get_status().value == "queued"
    assert _fetch(client, pending).enqueued_at is not None and _fetch(client, pending).latest_result() is None
    job = _fetch(client, delayed)
    assert job.get_status().value == "scheduled" and job.description == "add(a=1, b=2)"
    job = _fetch(client, canceled)
    assert job.get_status().value == "canceled" and job.latest_result() is None  # as RQ's own cancel
    job = _fetch(client, by_hand)
    assert job.get_status().value == "failed"
    assert job.latest_result().exc_string == "bad address: nobody@"
    # an operator's retry puts it back with a new enqueued_at, keeping the earlier record (as RQ's requeue)
    first = job.enqueued_at
    email_queue.retry_job(by_hand)
    job = _fetch(client, by_hand)
    assert job.get_status().value == "queued" and job.enqueued_at > first
    assert job.latest_result().exc_string == "bad address: nobody@"
    # RQ's scheduler sets enqueued_at when a delayed job becomes due; so does ours
    from core.queue import lifecycle

    client.zadd(keys.scheduled(email_queue.name), {delayed: 1})  # due now
    before = _fetch(client, delayed).enqueued_at
    assert lifecycle.promote_due(client, email_queue.name) == 1
    after = _fetch(client, delayed)
    assert after.get_status().value == "queued" and after.enqueued_at > before


def test_stopped_and_abandoned_jobs_read_through_rq(jobs_env):
    """The ends decided inside a script (a stop seen by finish or abandon, a lease that ran out)
    write RQ's record too; a stop's reason is zlib'd by rq_lib.lua itself, which RQ must read."""
    from core.queue import lifecycle

    client = jobs_env.client()
    stopped = email_queue.enqueue_job("add", {"a": 5, "b": 5})
    [claimed] = lifecycle.claim(client, "w1", "c", [email_queue.name], 1, 300)
    reason = "stopped by admin (ünïcode, ok)"
    assert lifecycle.stop_running(client, stopped, reason)[0]
    # the attempt then ends with an error: finish sees the stop mark, not the caller
    lifecycle.finish(client, claimed, lifecycle.AttemptResult(ok=False, error="KeyboardInterrupt"), "w1")
    job = _fetch(client, stopped)
    assert job.get_status().value == "canceled"
    record = job.latest_result()
    assert record.type.value == rq_compat.RESULT_STOPPED and record.exc_string == reason

    lost = email_queue.enqueue_job("add", {"a": 6, "b": 6})  # one stall already: a lost lease fails it
    lifecycle.claim(client, "w2", "c", [email_queue.name], 1, -1)  # its lease already ran out
    client.hset(keys.job(lost), "fk_stalls", 1)
    [(job_id, _task, outcome)] = lifecycle.abandon_expired(client, email_queue.name)
    assert (job_id, outcome) == (lost, "failed")
    job = _fetch(client, lost)
    assert job.get_status().value == "failed"
    assert "stopped heartbeating" in job.latest_result().exc_string

    long_reason = "stopped by " + "x" * 70000  # more than one stored deflate block
    gone = email_queue.enqueue_job("add", {"a": 7, "b": 7})
    lifecycle.claim(client, "w3", "c", [email_queue.name], 1, -1)
    client.hset(keys.job(gone), "fk_stop", long_reason)
    lifecycle.abandon_expired(client, email_queue.name)
    job = _fetch(client, gone)
    assert job.get_status().value == "canceled" and job.latest_result().exc_string == long_reason


def test_fallback_hand_back_lists_its_queue_and_writes_the_record(jobs_env):
    import time

    from core.api.queues import crm_queue
    from core.queue import lifecycle

    client = jobs_env.client()
    now = time.time()
    common = dict(queue="crm", task_name="crm_echo", kwargs={"text": "hi"}, retries=0, max_retries=0, user_id=None,
                  created_at=now - 2, started_at=now - 1, completed_at=now)
    done = lifecycle.ImportedOutcome(job_id="fb-done", status="completed", result_json='{"echo": "hi"}', error=None,
                                     **common)
    bad = lifecycle.ImportedOutcome(job_id="fb-bad", status="failed", result_json=None, error="ValueError: no", **common)
    assert lifecycle.import_outcomes(client, [done, bad]) == 2
    assert _rq_queue_names(client) == {crm_queue.name}
    job = _fetch(client, "fb-done")
    assert job.return_value() == {"echo": "hi"} and job.description == "crm_echo(text='hi')"
    assert job.enqueued_at is not None
    assert _fetch(client, "fb-bad").latest_result().exc_string == "ValueError: no"


def test_a_callback_lists_its_queue(jobs_env):
    from core.api.queues import ai_queue
    from core.queue import lifecycle

    client = jobs_env.client()
    parent = email_queue.enqueue_job("add", {"a": 1, "b": 1}, on_success="ai:ai_echo")
    assert ai_queue.name not in _rq_queue_names(client)
    [claimed] = lifecycle.claim(client, "w", "c", [email_queue.name], 1, 300)
    lifecycle.finish(client, claimed, lifecycle.AttemptResult(ok=True, result_json="2"), "w")
    assert ai_queue.name in _rq_queue_names(client)
    [callback] = Queue(ai_queue.name, connection=client, serializer=JSONSerializer).jobs
    assert callback.enqueued_at is not None and callback.func_name == "ai_echo"
    assert parent != callback.id


def test_every_status_our_scripts_write_is_one_rq_reads():
    """RQ's Job.restore does JobStatus(status): any other value makes Job.fetch, rq-dashboard's job
    lists and every RQ tool that loads the job raise. A state of ours RQ has no word for (an
    expired job, say) must be written as one of RQ's statuses plus a field of ours."""
    import re
    from pathlib import Path

    from rq.job import JobStatus

    from core.queue import lua_scripts

    lua = Path(lua_scripts.__file__).resolve().parent / "lua"
    written = set()
    for path in lua.glob("*.lua"):
        # finish.lua writes an end through hset_end(e, ...): the same HSET, with a claimed-ahead job's start
        written |= set(re.findall(r"(?:'HSET', |hset_end\(e, )[^\n]*?'status', '([a-z_]+)'", path.read_text()))
    from core.queue.lifecycle import NewJob

    written |= {NewJob("x", "t", {}, 0, 1).fields("q", None, "now")[1],
                NewJob("x", "t", {}, 0, 1, run_at=1.0).fields("q", None, "now")[1]}
    assert written >= {"queued", "scheduled", "started", "finished", "failed", "canceled"}
    assert written <= {s.value for s in JobStatus}, written - {s.value for s in JobStatus}
