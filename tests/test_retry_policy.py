"""Retry policies (back-off, jitter, schedules, retry_on / dont_retry_on, per-call overrides) and
the result cap, with real workers of several classes and the fallback.

Waits are proven by reading what was stored, never by timing: the run time of the next attempt
is the job's score in ``rq:scheduled:<q>`` (the spool's ``run_at`` in the fallback), and the
attempt ended between the job's ``started_at`` and the moment the test saw it scheduled. So a
wait of exactly d puts ``score - d`` in that window; full jitter puts ``score`` between the
window's start and its end + d."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Iterator

import pytest

from core.api.jobs import get_job
from core.api.queues import crm_queue, email_queue
from core.errors import JobsError
from core.fallback.executor import get_fallback
from core.platform import keys
from core.platform.connection import get_redis, redis_available
from core.queue import task_registry
from core.queue.backoff import InvalidRetryPolicyError, RetryPolicy
from core.queue.job_model import JobStatus
from core.queue.rq_compat import parse_time
from core.worker.loop import Worker
from tests.conftest import ADMIN_TOKEN
from tests.readme_blocks import readme_block
from tests.servers import wait_until

EPS = 0.05  # s: clock rounding between the worker's and the test's readings (same host)


def scheduled(server, job_id: str, retries: int, queue=email_queue, timeout: float = 20) -> dict:
    """Wait until the job waits for retry number ``retries``; its score, the window its attempt
    ended in (started_at .. seen) and its reason, read in one MULTI."""
    client = server.client()

    def probe():
        with client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.job(job_id), "status", "fk_retries", "started_at", "fk_reason")
            pipe.zscore(keys.scheduled(queue.name), job_id)
            (status, used, started, reason), score = pipe.execute()
        seen = time.time()
        if status == b"scheduled" and int(used or 0) == retries and score is not None:
            return {"score": score, "started": parse_time(started), "seen": seen, "reason": reason.decode()}
        return None

    return wait_until(probe, timeout=timeout, interval=0.01, message=f"job {job_id} to wait for retry {retries}")


def assert_exact(wait: dict, delay: float) -> None:
    assert wait["started"] - EPS <= wait["score"] - delay <= wait["seen"] + EPS, (wait, delay)


def assert_jittered(wait: dict, delay: float) -> None:
    assert wait["started"] - EPS <= wait["score"] <= wait["seen"] + delay + EPS, (wait, delay)


def final(job_id: str, timeout: float = 30):
    return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=timeout,
                      message=f"job {job_id} to end")


def runs(server, key: str) -> int:
    return int(server.client().get(key) or 0)


# --- the wait: back-off and jitter, schedules, overrides -----------------------------------------
def test_backoff_without_jitter_waits_exactly_and_full_jitter_waits_up_to_the_delay(jobs_env, start_worker):
    exact = email_queue.enqueue_job("fail_backoff_exact", {"key": "test:exact"})
    jittered = [email_queue.enqueue_job("fail_backoff_jittered", {"key": "test:jitter"}) for _ in range(6)]
    # the per-call override: full jitter on a task declared without
    jittered += [email_queue.enqueue_job("fail_backoff_exact", {"key": "test:jitter"}, retry_jitter="full")
                 for _ in range(6)]
    start_worker("email", "--worker-class", "simple")

    wait = scheduled(jobs_env, exact, 1)
    assert_exact(wait, 100)
    assert wait["reason"] == "retry 1 of 3 in 100s (back-off, no jitter)"
    offsets = []
    for job_id in jittered:
        wait = scheduled(jobs_env, job_id, 1)
        assert_jittered(wait, 100)
        assert wait["reason"].startswith("retry 1 of 3 in ") and wait["reason"].endswith("(back-off 100s, full jitter)")
        offsets.append(wait["score"] - wait["started"])
    # twelve uniform draws over 100 s: all within 10 s of each other has a chance below 1e-9
    assert max(offsets) - min(offsets) > 10, offsets
    assert runs(jobs_env, "test:exact") == 1 and runs(jobs_env, "test:jitter") == 12

    # an operator's fail with retry waits by the same policy, read from the job: retry 2 is 200 s
    before = time.time()
    job = email_queue.fail_job(exact, "provider hiccup", retry=True)
    after = time.time()
    assert job.status == JobStatus.RETRYING and job.retry_count == 2
    assert job.reason == "retry 2 of 3 in 200s (back-off, no jitter)"
    score = jobs_env.client().zscore(keys.scheduled(email_queue.name), exact)
    assert before - EPS <= score - 200 <= after + EPS


def test_retry_delays_schedule_runs_in_order_and_the_last_delay_holds(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("fail_on_schedule", {"key": "test:schedule"})
    assert get_job(job_id).max_retries == 3  # one retry per delay
    start_worker("email", "--worker-class", "fork")
    for retry, delay in ((1, 1), (2, 2), (3, 3600)):
        wait = scheduled(jobs_env, job_id, retry)
        assert_exact(wait, delay)
        assert wait["reason"] == f"retry {retry} of 3 in {delay}s (retry_delays)"
    assert runs(jobs_env, "test:schedule") == 3
    assert get_job(job_id).retry_policy == {"backoff": None, "delays": [1, 2, 3600], "jitter": "none",
                                            "retry_on": [], "dont_retry_on": []}


def test_per_call_policy_is_stored_in_the_job_and_applied_by_a_worker_that_never_saw_the_call(
        jobs_env, start_worker):
    by_schedule = email_queue.enqueue_job("fail_backoff_exact", {"key": "test:call"}, retry_delays=[7])
    by_backoff = email_queue.enqueue_job("fail_backoff_jittered", {"key": "test:call"}, retry_backoff=(50, 50),
                                         retry_jitter="none", max_retries=2)
    stored = {job_id: json.loads(jobs_env.client().hget(keys.job(job_id), "fk_retry"))
              for job_id in (by_schedule, by_backoff)}
    assert stored == {by_schedule: {"delays": [7], "jitter": "none"},
                      by_backoff: {"backoff": [50, 50], "jitter": "none"}}
    assert get_job(by_schedule).max_retries == 1 and get_job(by_backoff).max_retries == 2
    # the worker process starts after the enqueue: the task it registered says 100 s back-off, the
    # job says otherwise, and the job wins
    start_worker("email", "--worker-class", "threaded")
    assert_exact(scheduled(jobs_env, by_schedule, 1), 7)
    assert_exact(scheduled(jobs_env, by_backoff, 1), 50)


def test_job_shows_its_policy_in_the_dataclass_and_over_http(jobs_env, client):
    job_id = email_queue.enqueue_job("raise_kind", {"kind": "value", "key": "test:http"}, retry_jitter="none")
    expected = {"backoff": [0, 0], "delays": None, "jitter": "none", "retry_on": ["TimeoutError", "ConnectionError"],
                "dont_retry_on": ["ConnectionRefusedError"]}
    assert get_job(job_id).retry_policy == expected
    body = client.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_json()
    assert body["data"]["retry_policy"] == expected
    form = client.get("/dashboard/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf}).status_code == 302
    page = html.unescape(client.get(f"/dashboard/job/{job_id}").get_data(as_text=True))
    assert ("back-off 0 s, at most 0 s, none jitter; retry_on TimeoutError, ConnectionError; "
            "dont_retry_on ConnectionRefusedError</dd>") in page
    plain = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    assert jobs_env.client().hget(keys.job(plain), "fk_retry") is None  # the default costs nothing
    assert get_job(plain).retry_policy == {"backoff": [1, 300], "delays": None, "jitter": "full", "retry_on": [],
                                           "dont_retry_on": []}  # the tests' JOBS_RETRY_BACKOFF_BASE=1


# --- which failures retry --------------------------------------------------------------------------
def test_retry_on_and_dont_retry_on_filter_on_the_raised_type(jobs_env, start_worker):
    ids = {kind: email_queue.enqueue_job("raise_kind", {"kind": kind, "key": f"test:kind:{kind}"})
           for kind in ("timeout", "provider", "refused", "value")}
    ids["slow"] = email_queue.enqueue_job("raise_kind", {"kind": "slow", "key": "test:kind:slow"}, timeout=1,
                                          max_retries=1)
    ids["lookup"] = email_queue.enqueue_job("lookup_fails", {"key": "test:kind:lookup"})
    start_worker("email")  # the default worker class (prefork)
    jobs = {kind: final(job_id) for kind, job_id in ids.items()}
    assert all(job.status == JobStatus.FAILED for job in jobs.values())
    # retried: in retry_on (a subclass too; the job timeout counts as a TimeoutError)
    for kind, attempts in (("timeout", 3), ("provider", 3), ("slow", 2)):
        assert runs(jobs_env, f"test:kind:{kind}") == attempts and jobs[kind].retry_count == attempts - 1, kind
        assert "not retried" not in jobs[kind].error
    assert jobs["slow"].error.endswith("JobTimeoutException: task 'raise_kind' exceeded its timeout of 1s")
    # not retried: at once, and the error ends saying why
    for kind in ("refused", "value", "lookup"):
        assert runs(jobs_env, f"test:kind:{kind}") == 1 and jobs[kind].retry_count == 0, kind
    # the last line of the error (what users, events and logs show) says so, after the exception
    last = {kind: jobs[kind].error.splitlines()[-1] for kind in ("refused", "value", "lookup")}
    assert last == {
        "refused": "ConnectionRefusedError: planned refused; not retried: ConnectionRefusedError is in dont_retry_on "
                   "(ConnectionRefusedError) of task 'raise_kind'",
        "value": "ValueError: planned value; not retried: ValueError is not in retry_on (TimeoutError, "
                 "ConnectionError) of task 'raise_kind'",
        "lookup": "KeyError: 'no such row'; not retried: KeyError is in dont_retry_on (LookupError) of task "
                  "'lookup_fails'",
    }
    assert jobs["value"].error.startswith("Traceback")  # the traceback is kept above it


# --- the result cap ------------------------------------------------------------------------------------
@pytest.mark.parametrize("worker_class", ["threaded", "prefork"])
def test_a_result_over_the_cap_fails_the_job_without_retries(jobs_env, start_worker, worker_class):
    fits = email_queue.enqueue_job("big_result", {"size": 998, "key": "test:fits"})  # 1000 bytes of JSON
    over = email_queue.enqueue_job("big_result", {"size": 999, "key": "test:over"})  # 1001
    start_worker("email", "--worker-class", worker_class, env={"JOBS_RESULT_MAX_BYTES": "1000"})
    done, failed = final(fits), final(over)
    assert done.status == JobStatus.COMPLETED and done.result == "x" * 998
    assert failed.status == JobStatus.FAILED and failed.retry_count == 0 and runs(jobs_env, "test:over") == 1
    assert failed.error.startswith("task 'big_result' returned a result of 1001 bytes of JSON, over the 1000-byte "
                                   "limit (JOBS_RESULT_MAX_BYTES); not retried")
    assert jobs_env.client().hget(keys.job(over), "fk_result") is None


# --- the fallback: the same runner, the same policy ----------------------------------------------------
@pytest.mark.fallback
def test_fallback_applies_the_cap_the_filters_and_the_policy_and_hands_the_policy_back(jobs_env, setting):
    setting("JOBS_RESULT_MAX_BYTES", "1000")
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5, message="the outage to be noticed")
    fits = email_queue.enqueue_job("big_result", {"size": 998})
    over = email_queue.enqueue_job("big_result", {"size": 999})
    refused = email_queue.enqueue_job("raise_kind", {"kind": "value", "key": "unused"})
    before = time.time()
    waiting = email_queue.enqueue_job("fail_backoff_exact", {"key": "unused"}, retry_delays=[30])
    assert final(fits).result == "x" * 998
    capped = final(over)
    assert capped.mode == "fallback" and capped.status == JobStatus.FAILED and capped.retry_count == 0
    assert capped.error.startswith("task 'big_result' returned a result of 1001 bytes of JSON, over the "
                                   "1000-byte limit (JOBS_RESULT_MAX_BYTES)")
    not_retried = final(refused)
    assert not_retried.retry_count == 0 and not_retried.error.splitlines()[-1].startswith(
        "ValueError: planned value; not retried: ValueError is not in retry_on")
    job = wait_until(lambda: (j := get_job(waiting)) and j.status == JobStatus.RETRYING and j, timeout=10)
    after = time.time()
    assert job.retry_policy["delays"] == [30] and job.retry_policy["jitter"] == "none"
    run_at = get_fallback().spool.get(waiting).run_at
    assert before - EPS <= run_at - 30 <= after + EPS

    jobs_env.start()
    wait_until(redis_available, timeout=10, message="Redis to be seen again")
    get_fallback().hand_back()
    client = jobs_env.client()
    assert json.loads(client.hget(keys.job(waiting), "fk_retry")) == {"delays": [30], "jitter": "none"}
    assert client.zscore(keys.scheduled(email_queue.name), waiting) == pytest.approx(run_at)
    assert get_job(waiting).retry_policy["delays"] == [30]


# --- declaring and validating ------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "message"), [
    ({"retry_jitter": "half"}, "retry_jitter must be one of 'full', 'none', got 'half'"),
    ({"retry_backoff": (10, 5)}, "retry_backoff must be (base, cap): two numbers of seconds with 0 <= base <= cap"),
    ({"retry_backoff": 5}, "retry_backoff must be (base, cap)"),
    ({"retry_delays": []}, "retry_delays must be a list of 1 to 25 numbers of seconds"),
    ({"retry_delays": [10, -1]}, "retry_delays must be a list of 1 to 25 numbers of seconds from 0 to 604800"),
    ({"retry_delays": "60"}, "retry_delays must be a list"),
    ({"retry_delays": [1], "retry_backoff": (1, 2)}, "give retry_backoff (an exponential back-off) or retry_delays"),
])
def test_bad_policy_options_raise_a_clear_jobs_error_at_enqueue(jobs_env, options, message):
    with pytest.raises(InvalidRetryPolicyError, match=re.escape(message)) as caught:
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, **options)
    assert isinstance(caught.value, JobsError) and caught.value.http_status == 400
    assert email_queue.get_stats()["pending_jobs"] == 0


def test_bad_task_declarations_name_the_task_and_what_is_accepted(jobs_env):
    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    try:
        with pytest.raises(InvalidRetryPolicyError, match=r"task 'nope': retry_on must be an exception class or a "
                                                          r"tuple of them"):
            email_queue.register_task("nope", lambda: None, retry_on="TimeoutError")
        with pytest.raises(ValueError, match="task 'nope2': dont_retry_on must be an exception class"):
            email_queue.task(dont_retry_on=(ValueError, 3), name="nope2")(lambda: None)
        assert "nope" not in email_queue.registered_tasks() and "nope2" not in email_queue.registered_tasks()
        with pytest.raises(TypeError, match="unexpected keyword argument 'retry_on'"):
            email_queue.enqueue_job("add", {"a": 1, "b": 2}, retry_on=(ValueError,))  # task-level only
        # registering a task again without a policy keeps the one it was declared with
        first = email_queue.register_task("again", lambda: None, retry_delays=[5, 10])
        second = email_queue.register_task("again", lambda: None)
        assert second.retry == first.retry and second.max_retries == 2
    finally:
        task_registry._tasks.clear()
        task_registry._tasks.update(saved)


def test_a_calls_schedule_replaces_the_tasks_and_the_filters_stay():
    task = RetryPolicy.declare(retry_delays=[60, 120], retry_on=TimeoutError)
    call = task.override(RetryPolicy.declare(retry_backoff=(1, 8), retry_jitter="none"))
    assert (call.backoff, call.delays, call.jitter, call.retry_on) == ((1, 8), None, "none", (TimeoutError,))
    assert [call.delay(n) for n in range(5)] == [1, 2, 4, 8, 8]
    assert [task.delay(n) for n in range(3)] == [60, 120, 120]  # the last delay repeats, no jitter by default
    jittered = RetryPolicy.declare(retry_delays=[60], retry_jitter="full")
    assert all(0 <= jittered.delay(0) <= 60 for _ in range(100))


# --- the README's example ---------------------------------------------------------------------------
@pytest.fixture
def registry_restored(jobs_env) -> Iterator[None]:
    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    yield
    task_registry._tasks.clear()
    task_registry._tasks.update(saved)


def test_the_readmes_retry_example_runs_as_written(jobs_env, registry_restored):
    block = readme_block("Retries", "def push_contact(email: str) -> dict:")
    namespace: dict = {}
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    worker = Worker([crm_queue.name], worker_class="simple")  # in this process: it knows push_contact
    thread = threading.Thread(target=worker.work, kwargs={"burst": True}, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()

    bad = get_job(namespace["bad_id"])
    assert bad.status == JobStatus.FAILED and bad.retry_count == 0
    assert bad.error.splitlines()[-1] == ("ValueError: not an email address: 'nobody'; not retried: ValueError is in "
                                          "dont_retry_on (ValueError) of task 'push_contact'")
    job = get_job(namespace["job_id"])
    assert job.status == JobStatus.RETRYING and job.retry_count == 1 and "CrmDown: the CRM is down" in job.error
    assert job.retry_policy == {"backoff": [5, 120], "delays": None, "jitter": "full",
                                "retry_on": ["ConnectionError", "TimeoutError"], "dont_retry_on": ["ValueError"]}
    assert job.reason.startswith("retry 1 of 4 in ") and job.reason.endswith("(back-off 5s, full jitter)")
    score = get_redis().zscore(keys.scheduled(crm_queue.name), job.job_id)
    assert job.started_at - EPS <= score <= time.time() + 5 + EPS
    urgent = get_job(namespace["urgent_id"])
    assert urgent.max_retries == 2 and urgent.reason == "retry 1 of 2 in 1s (retry_delays)"
    assert urgent.retry_policy["delays"] == [1, 1] and urgent.retry_policy["jitter"] == "none"
