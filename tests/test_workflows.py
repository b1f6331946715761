"""Dependencies, callbacks, chains and batches with real Redis and real worker processes."""

from __future__ import annotations

import json
import random
import time

import pytest

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.errors import InvalidPayloadError, UnknownTaskError
from core.platform.connection import get_redis
from core.queue.job_model import JobStatus
from core.queue.job_options import InvalidJobIdError
from core.workflows import Step, chain, enqueue_batch, get_batch
from tests.conftest import finished
from tests.servers import tkey, wait_until

pytestmark = pytest.mark.cluster_too  # on standalone Redis and in cluster mode (tests/conftest.py)


def _callbacks() -> list[dict]:
    return [json.loads(v) for v in get_redis().lrange(tkey("callbacks"), 0, -1)]


def test_a_three_step_chain_runs_in_order_passing_results_along(start_worker):
    start_worker("email", "--worker-class", "threaded", "--concurrency", "4")
    ids = chain([Step("step_add", {"key": tkey("chain"), "n": 1}), Step("step_add", {"key": tkey("chain"), "n": 10}),
                 Step("step_add", {"key": tkey("chain"), "n": 100})], user_id="u1")
    last = finished(ids[-1], timeout=20)
    assert last.status == JobStatus.COMPLETED and last.result == 111
    assert [v.decode() for v in get_redis().lrange(tkey("chain"), 0, -1)] == ["1:None", "10:1", "100:11"]
    assert [get_job(i).result for i in ids] == [1, 11, 111]
    assert get_job(ids[2]).payload == {"key": tkey("chain"), "n": 100, "previous": 11}


def test_a_waiting_job_shows_why_and_a_failed_dependency_cancels_its_dependents_with_the_reason(start_worker):
    email_queue.pause()
    parent = email_queue.enqueue_job("always_fail", {"message": "gmail said no"})
    child = email_queue.enqueue_job("add", {"a": 1, "b": 2}, depends_on=[parent])
    grandchild = email_queue.enqueue_job("add", {"a": 3, "b": 4}, depends_on=child)
    runs_anyway = email_queue.enqueue_job("add", {"a": 5, "b": 6}, depends_on=[parent], on_dependency_failure="run")
    waiting = get_job(child)
    assert waiting.status == JobStatus.DELAYED and waiting.reason == f"waiting for 1 job(s) to end: {parent}"
    stats = email_queue.get_stats()
    assert stats["delayed_jobs"] == 3 and stats["limited_jobs"] == 0  # waiting for a job is not a rate limit
    start_worker("email", "--worker-class", "simple")
    email_queue.resume()
    assert finished(parent).status == JobStatus.FAILED
    child_job, grandchild_job = finished(child), finished(grandchild)
    assert child_job.status == JobStatus.CANCELED
    assert child_job.error == f"dependency {parent} failed: ValueError: gmail said no"
    assert grandchild_job.status == JobStatus.CANCELED and grandchild_job.error.startswith(f"dependency {child} canceled")
    assert finished(runs_anyway).result == 11
    # a dependency that already failed cancels a new dependent at once
    late = email_queue.enqueue_job("add", {"a": 1, "b": 1}, depends_on=[parent])
    assert get_job(late).status == JobStatus.CANCELED and "failed: ValueError: gmail said no" in get_job(late).error


def test_on_success_and_on_failure_callbacks_run_as_jobs_with_the_parent_and_its_result_or_error(start_worker):
    start_worker("email", "--worker-class", "simple")
    good = email_queue.enqueue_job("add", {"a": 2, "b": 3}, on_success="record_callback", on_failure="record_callback")
    bad = email_queue.enqueue_job("always_fail", {"message": "boom"}, on_failure="email:record_callback")
    canceled = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=600, on_failure="record_callback")
    email_queue.cancel_job(canceled)
    wait_until(lambda: get_redis().llen(tkey("callbacks")) == 3, timeout=20)
    by_parent = {c["parent_id"]: c for c in _callbacks()}
    assert by_parent[good]["result"] == 5 and by_parent[good]["outcome"] is None
    assert by_parent[bad] == {"parent_id": bad, "result": None, "outcome": "failed", "error": "ValueError: boom"}
    assert by_parent[canceled]["outcome"] == "canceled" and by_parent[canceled]["error"] == "canceled"
    time.sleep(0.5)
    assert get_redis().llen(tkey("callbacks")) == 3  # once each


def test_bad_workflow_options_are_clear_errors(jobs_env):
    with pytest.raises(UnknownTaskError, match=r"on_success 'nope': no task 'nope' on queue email; registered:"):
        email_queue.enqueue_job("add", {"a": 1, "b": 1}, on_success="nope")
    with pytest.raises(InvalidPayloadError, match=r"on_dependency_failure 'ignore' is not accepted; accepted: cancel, run"):
        email_queue.enqueue_job("add", {"a": 1, "b": 1}, depends_on=["x"], on_dependency_failure="ignore")
    with pytest.raises(InvalidPayloadError, match=r"either depends_on or delay/at"):
        email_queue.enqueue_job("add", {"a": 1, "b": 1}, depends_on=["x"], delay=5)
    with pytest.raises(InvalidJobIdError, match=r"malformed job id 'a b'"):
        email_queue.enqueue_job("add", {"a": 1, "b": 1}, depends_on=["a b"])
    with pytest.raises(InvalidPayloadError, match=r"payload key 'previous'"):
        chain([Step("step_add", {"key": "k", "n": 1}), Step("step_add", {"key": "k", "n": 1, "previous": 3})])
    with pytest.raises(InvalidPayloadError, match=r"a batch takes a list of 1 to"):
        enqueue_batch("email", "add", [])


def test_a_chain_with_a_bad_step_writes_no_step_and_names_the_bad_one(jobs_env):
    good = Step("step_add", {"key": tkey("orphan"), "n": 1})
    cases = [
        (UnknownTaskError, r"chain step 2 \(nope\): unknown task 'nope' on queue email",
         [good, good, Step("nope", {})]),
        (InvalidPayloadError, r"chain step 1 \(step_add\): option\(s\) 'delay' not accepted in a chain step; "
                              r"accepted: max_retries, priority",
         [good, Step("step_add", {"key": "k", "n": 2}, options={"delay": 5})]),
        (InvalidPayloadError, r"chain step 1 \(step_add\): unknown priority 'urgent'; accepted: high, normal, low",
         [good, Step("step_add", {"key": "k", "n": 2}, options={"priority": "urgent"})]),
    ]
    for error, message, steps in cases:
        with pytest.raises(error, match=message):
            chain(steps)
    assert email_queue.get_stats()["total_jobs"] == 0  # no step 0 left to run on its own


def test_a_chain_with_redis_down_answers_503_and_spools_nothing(jobs_env):
    from core.errors import QueueUnavailableError
    from core.fallback.executor import get_fallback

    jobs_env.stop()
    with pytest.raises(QueueUnavailableError, match="a chain needs Redis, which is unreachable now; nothing was written"):
        chain([Step("step_add", {"key": "k", "n": 1}), Step("step_add", {"key": "k", "n": 2})])
    assert get_fallback().pending_count() == 0


def test_batch_of_200_on_2_workers_with_sigkills_runs_its_callback_exactly_once(start_worker):
    """SIGKILLs while members run: lost attempts are retried, only final ends count, the callback
    job is created by the script that counts the last end - once."""
    workers = [start_worker("email", "--worker-class", "fork", "--concurrency", "2") for _ in range(2)]
    payloads = [{"key": tkey("members"), "item": i, "seconds": 0.05} for i in range(200)]
    batch_id = enqueue_batch("email", "batch_member", payloads, on_complete="batch_done", user_id="ops")
    rng = random.Random(7)
    # the workers serve before the first kill: under load their start-up (imports) can outlast all
    # six kills, which then hit no running member and the last assertion fails
    wait_until(lambda: get_redis().scard(tkey("members")) >= 1, timeout=60, message="the members to start running")
    for _ in range(6):
        time.sleep(rng.uniform(0.3, 0.8))
        victim = rng.randrange(len(workers))
        workers[victim].kill_hard()
        workers[victim] = start_worker("email", "--worker-class", "fork", "--concurrency", "2")
    wait_until(lambda: get_batch(batch_id)["done"], timeout=120, interval=0.25)
    progress = get_batch(batch_id)
    assert (progress["total"], progress["completed"], progress["failed"], progress["canceled"]) == (200, 200, 0, 0)
    callback = finished(progress["callback_job_id"], timeout=20)
    assert callback.status == JobStatus.COMPLETED and callback.user_id == "ops"
    time.sleep(1.0)
    done = [json.loads(v) for v in get_redis().lrange(tkey("batch_done"), 0, -1)]
    assert done == [{"batch_id": batch_id, "succeeded": 200, "failed": 0, "canceled": 0}]
    assert get_redis().scard(tkey("members")) == 200
    assert email_queue.get_stats()["abandoned_jobs"] >= 1  # the kills did hit running members


def test_batch_progress_counts_failures_and_the_last_two_members_ending_together(start_worker):
    email_queue.pause()
    payloads = [{"key": tkey("m2"), "item": i, "fail": i == 0, "seconds": 0.3 if i >= 1 else 0} for i in range(3)]
    batch_id = enqueue_batch("email", "batch_member", payloads, on_complete="batch_done", max_retries=0)
    assert get_batch(batch_id) | {"created_at": None} == {
        "batch_id": batch_id, "task": "batch_member", "queue": "email", "user_id": None, "total": 3, "completed": 0,
        "failed": 0, "canceled": 0, "pending": 3, "done": False, "callback_job_id": None, "created_at": None,
        "ended_at": None}
    start_worker("email", "--worker-class", "threaded", "--concurrency", "3")  # the two slow ones end together
    email_queue.resume()
    wait_until(lambda: get_batch(batch_id)["done"], timeout=20)
    progress = get_batch(batch_id)
    assert (progress["completed"], progress["failed"], progress["pending"]) == (2, 1, 0)
    finished(progress["callback_job_id"])
    assert [json.loads(v)["failed"] for v in get_redis().lrange(tkey("batch_done"), 0, -1)] == [1]


def test_batch_route_shows_progress_to_its_owner_and_admin(client, start_worker):
    from core.platform.auth import issue_user_token
    from tests.conftest import ADMIN_TOKEN

    batch_id = enqueue_batch("email", "add", [{"a": i, "b": 1} for i in range(3)], user_id="alice")
    admin = client.get(f"/api/jobs/batch/{batch_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin.status_code == 200 and admin.get_json()["data"]["total"] == 3
    alice = {"Authorization": f"Bearer {issue_user_token('alice')}"}
    bob = {"Authorization": f"Bearer {issue_user_token('bob')}"}
    assert client.get(f"/api/jobs/batch/{batch_id}", headers=alice).get_json()["data"]["pending"] == 3
    assert client.get(f"/api/jobs/batch/{batch_id}", headers=bob).status_code == 404
    assert client.get("/api/jobs/batch/no-such-batch", headers=alice).status_code == 404
    assert client.get("/api/jobs/batch/bad%20id", headers=alice).status_code == 400
