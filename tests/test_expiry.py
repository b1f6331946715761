"""Expiry (issue 24, item 2): ``expires=`` on a task or a call; a job not started by then ends
``expired`` and never runs, in Redis (pending, delayed, retrying, parked by a limit) and in the
fallback spool. Real redis-server, real worker processes; each test proves a job never ran by the
list (or file) its task appends to."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from rq.job import Job as RQJob
from rq.registry import CanceledJobRegistry
from rq.serializers import JSONSerializer

import tests.expiry_tasks  # noqa: F401  (registers the tasks in this process too)
from core.api.jobs import get_job, retry_job
from core.api.queues import email_queue
from core.errors import InvalidPayloadError
from core.events import listen_events
from core.platform import keys
from core.platform.connection import redis_available
from core.queue import lifecycle
from core.queue.job_model import JobStatus
from tests.conftest import ADMIN_TOKEN, finished
from tests.servers import wait_until

pytestmark = pytest.mark.timeout(120)
WORKER = ("email", "--import", "tests.expiry_tasks")


def wait_past(*job_ids: str) -> None:
    """Until every job's expires_at has passed (a wait, not a timed assertion)."""
    latest = max(get_job(j).expires_at for j in job_ids)
    wait_until(lambda: time.time() > latest + 0.05, timeout=30, message="the expiry to pass")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_task_level_and_per_call_expiry_seconds_and_datetimes(jobs_env, start_worker):
    """Pending jobs in Redis: the call's expires wins over the task's, both ways; a datetime (naive
    = UTC, or aware in any zone) works like seconds. The expired ones never run."""
    key = "test:expiry:runs"
    naive = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)
    nairobi = datetime.now(timezone(timedelta(hours=3))) + timedelta(seconds=1)
    expire = {
        "call-shortens": email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "a"}, expires=0.5),
        "task-level": email_queue.enqueue_job("note_within_a_second", {"key": key, "value": "b"}),
        "naive-datetime": email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "c"}, expires=naive),
        "aware-datetime": email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "d"}, expires=nairobi),
        "bulk": email_queue.enqueue_many("note_within_an_hour", [{"key": key, "value": "h"}], expires=0.5)[0],
    }
    batch_id = email_queue.enqueue_batch("note_within_an_hour", [{"key": key, "value": "i"}], expires=0.5)
    expire["batch member"] = jobs_env.client().lrange(keys.batch(batch_id) + ":jobs", 0, -1)[0].decode()
    run = {
        "call-lengthens": email_queue.enqueue_job("note_within_a_second", {"key": key, "value": "e"}, expires=3600),
        "task-default": email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "f"}),
        "timedelta": email_queue.enqueue_job("note_within_a_second", {"key": key, "value": "g"},
                                             expires=timedelta(minutes=5)),
    }
    assert get_job(expire["naive-datetime"]).expires_at == naive.replace(tzinfo=UTC).timestamp()
    assert get_job(expire["aware-datetime"]).expires_at == nairobi.timestamp()
    assert 3500 < get_job(run["task-default"]).expires_at - time.time() <= 3600
    wait_past(*expire.values())
    start_worker(*WORKER)
    for name, job_id in run.items():
        job = finished(job_id)
        assert (job.status, job.mode) == (JobStatus.COMPLETED, "redis"), (name, job.error)
    for name, job_id in expire.items():
        job = finished(job_id)
        assert (job.status, job.mode) == (JobStatus.EXPIRED, "redis"), (name, job.status, job.error)
        assert job.status.is_final and job.started_at is None and job.completed_at is not None
        assert job.error == f"expired: not started by {iso(job.expires_at)} (its expires); it never ran", name
    assert sorted(v.decode() for v in jobs_env.client().lrange(key, 0, -1)) == ["e", "f", "g"]
    stats = email_queue.get_stats()
    assert (stats["expired_jobs"], stats["canceled_jobs"], stats["completed_jobs"]) == (6, 6, 3)
    batch = email_queue.get_batch(batch_id)  # an expired member ends the batch's count as canceled
    assert (batch["done"], batch["canceled"], batch["pending"]) == (True, 1, 0)
    # the sweep's "*:expired" (registry entries of ended jobs past their TTL) is another count
    client = jobs_env.client()
    client.zadd(keys.finished(email_queue.name), {run["task-default"]: time.time() - 10})
    assert lifecycle.expire_registries(client, email_queue.name) == 1
    stats = email_queue.get_stats()
    assert (stats["expired_jobs"], stats["completed_jobs"]) == (6, 2)


def test_an_expired_job_through_http_events_rq_and_the_worker_log(jobs_env, client, start_worker):
    """GET /api/jobs/<id> says "expired"; the events stream has "expired"; RQ's Job.fetch reads it
    (as RQ's "canceled", in RQ's canceled registry); the worker logs it; metrics count it."""
    job_id = email_queue.enqueue_job("note_within_an_hour", {"key": "test:expiry:http", "value": "x"}, expires=0.3,
                                     user_id="u-exp", job_id="exp-http-1")
    wait_past(job_id)
    worker = start_worker(*WORKER)
    assert finished(job_id).status == JobStatus.EXPIRED
    answer = client.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200
    data = answer.get_json()["data"]
    assert (data["status"], data["mode"], data["result"]) == ("expired", "redis", None)
    assert data["error"].startswith("expired: not started by ") and data["expires_at"] == get_job(job_id).expires_at
    events = [e for e in listen_events(job_id=job_id, last_id="0", timeout=0.5, block_ms=100)]
    assert [e["event"] for e in events] == ["enqueued", "expired"]
    assert events[-1]["status"] == "expired" and events[-1]["error"] == data["error"]
    rq_job = RQJob.fetch(job_id, connection=jobs_env.client(), serializer=JSONSerializer)
    assert rq_job.get_status().value == "canceled" and rq_job.func_name == "note_within_an_hour"
    assert job_id in CanceledJobRegistry(email_queue.name, connection=jobs_env.client()).get_job_ids()
    assert jobs_env.client().hget(keys.job(job_id), "fk_expired") == b"1"
    assert 0 < jobs_env.client().ttl(keys.job(job_id)) <= 7 * 86400  # kept and swept like other ended jobs
    wait_until(lambda: "outcome=expired" in worker.log(), timeout=10, message="the worker's log line")
    assert jobs_env.client().exists("test:expiry:http") == 0
    from prometheus_client.parser import text_string_to_metric_families

    from core.queue.task_metrics import get_task_stats

    assert get_task_stats("note_within_an_hour")["note_within_an_hour"]["expired"] == 1
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_data(as_text=True)
    runs = {(s.labels["task"], s.labels["outcome"]): s.value for family in text_string_to_metric_families(metrics)
            if family.name == "fikiri_jobs_task_executions" for s in family.samples if s.name.endswith("_total")}
    assert runs[("note_within_an_hour", "expired")] == 1
    from tests.test_dashboard_pages import login

    page = login(client).get(f"/dashboard/job/{job_id}").get_data(as_text=True)
    assert 'class="badge expired"' in page and time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(data["expires_at"])) in page
    # an ended job: cancel answers a conflict
    assert client.post(f"/api/jobs/{job_id}/cancel",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 409
    # it ended: the same caller-chosen id starts a new run, which runs
    assert email_queue.enqueue_job("note_within_an_hour", {"key": "test:expiry:http", "value": "y"},
                                   job_id=job_id) == job_id
    assert (finished(job_id).status, jobs_env.client().lrange("test:expiry:http", 0, -1)) == (JobStatus.COMPLETED, [b"y"])


def test_delayed_and_retrying_jobs_expire_when_their_turn_comes_late(jobs_env, start_worker):
    """A delayed job due before its expiry but reached after it, and a retry whose back-off outlasts
    it, both end expired: every attempt must start before the job's expires."""
    key = "test:expiry:later"
    start_worker(*WORKER)
    retried = email_queue.enqueue_job("fail_first_attempt", {"key": key}, expires=3)
    # the first attempt pauses the queue and fails: its retry (and the delayed jobs) wait past their expiry
    wait_until(lambda: get_job(retried).retry_count == 1, timeout=30, message="the first attempt to fail")
    assert email_queue.is_paused()
    delayed = email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "delayed"}, delay=1, expires=2.5)
    on_time = email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "on time"}, delay=1)
    wait_past(retried, delayed)
    email_queue.resume()
    assert (finished(on_time).status, finished(on_time).mode) == (JobStatus.COMPLETED, "redis")
    for job_id in (retried, delayed):
        job = finished(job_id)
        assert (job.status, job.mode) == (JobStatus.EXPIRED, "redis"), job.error
    assert finished(retried).retry_count == 1
    assert [v.decode() for v in jobs_env.client().lrange(key, 0, -1)] == ["attempt", "on time"]
    # an operator's retry of a failed job runs it, whatever its expires said
    failed = email_queue.enqueue_job("always_fail", {"message": "boom"}, expires=2)
    assert finished(failed).status == JobStatus.FAILED
    wait_past(failed)
    retry_job(failed)
    again = wait_until(lambda: (j := get_job(failed)).status == JobStatus.FAILED and j.retry_count == 1 and j,
                       timeout=30, message="the operator's retry to run and fail again")
    assert again.expires_at is None and "ValueError: boom" in again.error


def test_a_job_parked_by_a_limit_expires_without_taking_the_slot(jobs_env, start_worker):
    """Parked behind a concurrency limit past its expiry: when released it ends expired, takes no
    slot, and the next parked job runs."""
    key, release = "test:expiry:parked", "test:expiry:release"
    limit = {"concurrency_limit": 1, "concurrency_key": "expiry-test"}
    start_worker(*WORKER)
    blocker = email_queue.enqueue_job("note_when_released", {"key": key, "value": "blocker", "release": release},
                                      **limit)
    wait_until(lambda: jobs_env.client().llen(key) == 1, timeout=30, message="the blocker to start")
    parked = email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "parked"}, expires=1, **limit)
    after = email_queue.enqueue_job("note_within_an_hour", {"key": key, "value": "after"}, **limit)
    for job_id in (parked, after):
        wait_until(lambda j=job_id: get_job(j).status == JobStatus.DELAYED and get_job(j).reason, timeout=30,
                   message="the job to be parked by the limit")
    wait_past(parked)
    jobs_env.client().set(release, 1)
    assert finished(blocker).status == JobStatus.COMPLETED
    assert (finished(parked).status, finished(parked).mode) == (JobStatus.EXPIRED, "redis")
    assert finished(after).status == JobStatus.COMPLETED
    assert [v.decode() for v in jobs_env.client().lrange(key, 0, -1)] == ["blocker:started", "blocker", "after"]


@pytest.mark.parametrize(("expires", "message"), [
    ("soon", "expires must be seconds after enqueue (a number > 0), a timedelta or a datetime (naive = UTC), "
             "got str 'soon'"),
    (True, "expires must be seconds after enqueue (a number > 0), a timedelta or a datetime (naive = UTC), got bool"),
    (0, "expires must be a finite number of seconds > 0 after enqueue, got 0"),
    (-5, "expires must be a finite number of seconds > 0 after enqueue, got -5"),
    (float("nan"), "got nan"),
    (float("inf"), "got inf"),
    (timedelta(seconds=-1), "got datetime.timedelta(days=-1, seconds=86399)"),
    (datetime(2020, 1, 1, 9, 30), "expires 2020-01-01T09:30:00Z has already passed"),
])
def test_bad_expires_values_are_refused_in_the_caller(jobs_env, expires, message):
    with pytest.raises(InvalidPayloadError) as raised:
        email_queue.enqueue_job("note_within_an_hour", {"key": "k", "value": "v"}, expires=expires)
    assert message in raised.value.message and raised.value.http_status == 400
    assert jobs_env.client().llen(keys.queue(email_queue.name)) == 0


def test_an_expiry_before_the_run_time_and_a_bad_task_level_value_are_refused(jobs_env):
    with pytest.raises(InvalidPayloadError, match=r"expires .* is not after the job's run time .* \(delay/at\)"):
        email_queue.enqueue_job("note_within_an_hour", {"key": "k", "value": "v"}, delay=60, expires=30)
    with pytest.raises(ValueError, match="task 'bad_expiry': expires must be a finite number of seconds > 0"):
        @email_queue.task(expires=-1)
        def bad_expiry() -> None: ...
    with pytest.raises(TypeError, match="unknown enqueue option"):
        tests.expiry_tasks.note_within_an_hour.options(expire=5)
    job_id = tests.expiry_tasks.note_within_an_hour.options(expires=7).enqueue(key="k", value="v")
    assert 0 < get_job(job_id).expires_at - time.time() <= 7


def test_the_ai_reply_drafts_expire_after_an_hour(jobs_env):
    from ai_assistant.thread_jobs import DRAFT_EXPIRES, queue_thread_ai

    job_id = queue_thread_ai("thread-exp", user_id="42")
    assert DRAFT_EXPIRES == 3600
    assert 3500 < get_job(job_id).expires_at - time.time() <= DRAFT_EXPIRES


@pytest.mark.fallback
def test_the_fallback_spool_ends_expired_jobs_and_hands_them_back_as_expired(jobs_env, setting, tmp_path):
    """Redis down: the spool's claim ends a job past its expiry instead of running it (one runner
    thread, held by a job that waits for a file, so the others wait past their expiry); when Redis
    returns, the outcome is handed back and reads "expired" there too, RQ's "canceled" underneath."""
    setting("JOBS_FALLBACK_WORKERS", "1")
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5, message="the outage to be noticed")
    blocker = email_queue.enqueue_job("mark_file", {"path": str(marks), "value": "blocker", "gate": str(gate)})
    wait_until(lambda: get_job(blocker).status == JobStatus.RUNNING, timeout=10, message="the blocker to start")
    expiring = email_queue.enqueue_job("mark_file", {"path": str(marks), "value": "expiring"}, expires=0.3)
    plain = email_queue.enqueue_job("mark_file", {"path": str(marks), "value": "plain"})
    assert get_job(expiring).mode == "fallback" and get_job(expiring).expires_at is not None
    wait_past(expiring)
    gate.touch()
    assert finished(plain).status == JobStatus.COMPLETED
    job = finished(expiring)
    assert (job.status, job.mode) == (JobStatus.EXPIRED, "fallback")
    assert job.error == f"expired: not started by {iso(job.expires_at)} (its expires); it never ran"
    assert Path(marks).read_text().split() == ["blocker", "plain"]
    jobs_env.start()
    wait_until(redis_available, timeout=10, message="Redis to be back")
    client = jobs_env.client()
    wait_until(lambda: client.exists(keys.job(expiring)), timeout=20, message="the hand-back")
    assert (client.hget(keys.job(expiring), "status"), client.hget(keys.job(expiring), "fk_expired")) == (
        b"canceled", b"1")
    handed = get_job(expiring)
    assert (handed.status, handed.mode, handed.error) == (JobStatus.EXPIRED, "fallback", job.error)
    assert email_queue.get_stats()["expired_jobs"] == 1
    events = list(listen_events(job_id=expiring, last_id="0", timeout=0.5, block_ms=100))
    assert [e["event"] for e in events] == ["expired"] and "in the fallback" in events[0]["error"]


@pytest.fixture
def registry_restored(jobs_env):
    """The README block declares a task in this process: take it away again after."""
    from core.queue import task_registry

    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    yield
    task_registry._tasks.clear()
    task_registry._tasks.update(saved)


def test_the_readme_example(jobs_env, registry_restored):
    from tests.readme_blocks import readme_block

    block = readme_block("Enqueue from a Flask handler", "def draft_follow_up(user_id: str, thread_id: str) -> str:")
    namespace: dict = {}
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    now = time.time()
    ahead = {name: get_job(namespace[name]).expires_at - now for name in ("job_id", "answer", "digest")}
    assert 590 < ahead["job_id"] <= 600 and 290 < ahead["answer"] <= 300 and 7190 < ahead["digest"] <= 7200, ahead
    before = time.time()
    default = namespace["draft_follow_up"].enqueue(user_id="42", thread_id="t-10")  # the task's own: an hour
    assert before + 3600 <= get_job(default).expires_at <= time.time() + 3600
    assert all(get_job(namespace[n]).status == JobStatus.PENDING for n in ("job_id", "answer", "digest"))


def test_expiry_holds_under_a_sigkill_loop(jobs_env, start_worker):
    """Workers SIGKILLed 10 times while half the jobs pass their expiry: every job ends, a job with
    no expiry completes, an expired one never completed a run that reported (a run killed before
    its expiry may have begun: the next claim after the expiry ends it), and the counters agree."""
    import random

    key, client, rng = "test:expiry:kill", jobs_env.client(), random.Random(24)
    payloads = [{"key": key, "item": f"i{i}", "seconds": 0.03} for i in range(160)]
    workers = [start_worker("email", "--concurrency", "2"), start_worker("email", "--concurrency", "2")]
    assert finished(email_queue.enqueue_job("add", {"a": 1, "b": 1})).status == JobStatus.COMPLETED  # serving
    lasting, expiring = [], []
    for start in range(0, 160, 20):  # interleaved, so some of those that may expire run in time
        lasting += email_queue.enqueue_many("email_mark_done", payloads[start:start + 10])
        expiring += email_queue.enqueue_many("email_mark_done", payloads[start + 10:start + 20], expires=1.5)
    for _kill in range(10):
        time.sleep(rng.uniform(0.1, 0.4))
        workers.pop(rng.randrange(len(workers))).kill_hard()
        workers.append(start_worker("email", "--concurrency", "2"))
    jobs = {j: finished(j, timeout=120) for j in lasting + expiring}
    assert {jobs[j].status for j in lasting} == {JobStatus.COMPLETED}
    expired = [j for j in expiring if jobs[j].status == JobStatus.EXPIRED]
    assert {jobs[j].status for j in expiring} <= {JobStatus.COMPLETED, JobStatus.EXPIRED}
    done = {m.decode() for m in client.smembers(key)}
    completed = {jobs[j].payload["item"] for j in jobs if jobs[j].status == JobStatus.COMPLETED}
    # an expired job's side effect is there only if a run did it and was then killed before it could
    # report (a stall, counted): the claim after the expiry ended the job
    assert done >= completed and all(jobs[j].stalls >= 1 for j in expired if jobs[j].payload["item"] in done)
    assert done - completed <= {jobs[j].payload["item"] for j in expired}
    stats = email_queue.get_stats()
    assert (stats["expired_jobs"], stats["canceled_jobs"]) == (len(expired), len(expired))
    assert stats["completed_jobs"] == stats["total_results"] == 161 - len(expired)
    assert stats["pending_jobs"] == stats["delayed_jobs"] == stats["active_jobs"] == 0
    print(f"kill loop: {len(expired)} of 80 expired, {160 - len(expired)} completed, 0 lost")


def test_a_periodic_run_of_a_task_with_expires_carries_it(jobs_env):
    from core.schedule.periodic import JsonScheduler, register_periodic

    now = time.time()
    register_periodic("expiring-note", "note_within_an_hour", every=60, payload={"key": "k", "value": "v"}, now=now)
    register_periodic("plain-note", "record_run", every=60, payload={"key": "k"}, now=now)
    before = time.time()
    expiring, plain = JsonScheduler().run_due(now=now + 1)
    assert before + 3600 <= get_job(expiring).expires_at <= time.time() + 3600
    assert get_job(plain).expires_at is None


def test_the_cli_enqueues_with_expires_and_refuses_a_bad_one(jobs_env):
    from tests.test_ops_cli import cli

    made = cli(jobs_env.url, "--json", "enqueue", "email", "add", "--payload", '{"a": 1, "b": 2}', "--expires", "600")
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["job_id"]
    shown = json.loads(cli(jobs_env.url, "--json", "status", job_id).stdout)
    assert shown["status"] == "pending" and 0 < shown["expires_at"] - time.time() <= 600
    bad = cli(jobs_env.url, "enqueue", "email", "add", "--payload", '{"a": 1, "b": 2}', "--expires", "-3")
    assert bad.returncode == 2 and "expires must be a finite number of seconds > 0 after enqueue, got -3" in bad.stderr


def test_a_chain_step_takes_expires_counted_from_the_chain(jobs_env):
    from core.workflows import Step, chain

    with pytest.raises(InvalidPayloadError, match=r"chain step 1 \(note_within_an_hour\): expires must be a finite"):
        chain([Step("note_within_an_hour", {"key": "k", "value": "1"}),
               Step("note_within_an_hour", {"key": "k", "value": "2"}, options={"expires": 0})])
    first, second = chain([Step("note_within_an_hour", {"key": "k", "value": "1"}, options={"expires": 60}),
                           Step("note_within_an_hour", {"key": "k", "value": "2"}, options={"expires": 120})])
    assert (get_job(first).status, get_job(second).status) == (JobStatus.PENDING, JobStatus.DELAYED)
    assert 0 < get_job(second).expires_at - get_job(first).expires_at <= 60 + 1
