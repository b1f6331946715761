"""Issue 22: adaptive prefetch and finish-and-claim. Jobs claimed ahead show pending (RQ's tools:
started), begin with their start written, go back when their worker stops or dies without using
a retry or a stall; one script records ends and claims the next jobs."""

from __future__ import annotations

import signal
import time

from rq.job import Job as RQJob

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform import keys
from core.platform.connection import get_redis
from core.queue import lifecycle
from core.queue.job_model import JobStatus
from core.worker.prefetch import AdaptivePrefetch
from tests.conftest import finished
from tests.servers import wait_until

EMAIL = "fikiri:email"


def _claim(limit: int, start: int, lease: float = 30.0) -> lifecycle.ClaimBatch:
    return lifecycle.claim(get_redis(), "w-test", "t1.", [EMAIL], limit, lease, start=start)


def test_adaptive_prefetch_grows_on_full_claims_and_stops_on_a_short_one():
    prefetch = AdaptivePrefetch(limit=16, budget=0.005)
    prefetch.claimed(1, 1)
    assert prefetch.ahead() == 0  # no job has ended here yet: its duration is unknown
    prefetch.ran(0.0001)
    assert prefetch.ahead() == 1
    for _ in range(6):
        prefetch.claimed(4, 4)
    assert prefetch.ahead() == 16  # doubled up to the count bound
    assert prefetch.ahead(running_for=0.01) == 0  # a job in hand already ran past the budget
    prefetch.claimed(5, 2)
    assert prefetch.ahead() == 0  # a short claim: the backlog is shallow, one job per free slot
    slow = AdaptivePrefetch(limit=16, budget=0.005)
    slow.claimed(1, 1)
    for _ in range(20):
        slow.ran(0.1)
    assert slow.ahead() == 0  # 100 ms jobs are never claimed ahead


def test_a_job_claimed_ahead_shows_pending_then_running_once_its_start_is_written(jobs_env):
    first = email_queue.enqueue_job("send_email", {"to": "a@example.com", "subject": "s", "body": "b"})
    ahead = email_queue.enqueue_job("send_email", {"to": "b@example.com", "subject": "s", "body": "b"})
    jobs = _claim(2, start=1)
    assert [(j.job_id, j.ahead) for j in jobs] == [(first, False), (ahead, True)]
    assert get_job(first).status == JobStatus.RUNNING
    held = get_job(ahead)
    assert held.status == JobStatus.PENDING and held.started_at is None
    assert held.reason == "claimed by w-test; starts when one of its slots frees (stop it to take it back)"
    assert RQJob.fetch(ahead, connection=get_redis()).get_status(refresh=True) == "started"  # RQ's started registry
    events = [e[1][b"event"] for e in get_redis().xrange(keys.events()) if e[1][b"job"] == ahead.encode()]
    assert events == [b"enqueued"]  # no "started" yet
    began = time.time()
    lifecycle.finish_many(get_redis(), [], "w-test", starts=[(jobs[1], began)])
    now = get_job(ahead)
    assert now.status == JobStatus.RUNNING and abs(now.started_at - began) < 0.01
    events = [e[1][b"event"] for e in get_redis().xrange(keys.events()) if e[1][b"job"] == ahead.encode()]
    assert events == [b"enqueued", b"started"]


def test_finish_and_claim_records_the_end_and_claims_the_next_in_one_script(jobs_env):
    ids = [email_queue.enqueue_job("send_email", {"to": f"{i}@example.com", "subject": "s", "body": "b"})
           for i in range(3)]
    (job,) = _claim(1, start=1)
    args = lifecycle.claim_args("w-test", "t2.", [EMAIL], 2, 30.0, start=1)
    outcomes, nxt = lifecycle.finish_and_claim(get_redis(), [(job, lifecycle.AttemptResult(ok=True, result_json="7"))],
                                               "w-test", None, args, [EMAIL], 1)
    assert outcomes == ["completed"] and get_job(ids[0]).result == 7
    assert [(j.job_id, j.ahead) for j in nxt] == [(ids[1], False), (ids[2], True)]
    assert get_job(ids[1]).status == JobStatus.RUNNING and get_job(ids[2]).status == JobStatus.PENDING
    # the finish is still fenced by the lease: a second end of the same attempt writes nothing
    again, none = lifecycle.finish_and_claim(get_redis(), [(job, lifecycle.AttemptResult(ok=False, error="x"))],
                                             "w-test", None, None, [EMAIL])
    assert again == [None] and len(none) == 0 and get_job(ids[0]).status == JobStatus.COMPLETED


def test_a_release_hands_claimed_ahead_jobs_back_in_order_uncounted(jobs_env):
    ids = [email_queue.enqueue_job("send_email", {"to": f"{i}@example.com", "subject": "s", "body": "b"})
           for i in range(4)]
    jobs = _claim(3, start=1)
    get_redis().delete(keys.wake(EMAIL))
    lifecycle.finish_many(get_redis(), [(jobs[0], lifecycle.AttemptResult(ok=True))], "w-test",
                          releases=[jobs[1], jobs[2]])
    r = get_redis()
    assert [i.decode() for i in r.lrange(keys.queue(EMAIL), 0, -1)] == ids[1:]  # back at the head, in order
    assert r.zcard(keys.started(EMAIL)) == 0
    for job_id in ids[1:3]:
        job = get_job(job_id)
        assert job.status == JobStatus.PENDING and job.retry_count == 0 and job.stalls == 0 and job.reason is None
        assert r.hget(keys.job(job_id), "fk_claimed") == b"0"
    assert r.llen(keys.wake(EMAIL)) == 1


def test_a_claimed_ahead_job_whose_worker_died_goes_back_without_a_stall(jobs_env):
    ids = [email_queue.enqueue_job("send_email", {"to": f"{i}@example.com", "subject": "s", "body": "b"})
           for i in range(2)]
    _claim(2, start=1, lease=0.05)
    time.sleep(0.1)
    lifecycle.abandon_expired(get_redis(), EMAIL)
    begun, ahead = get_job(ids[0]), get_job(ids[1])
    assert begun.status == JobStatus.PENDING and begun.stalls == 1  # its attempt was lost: a stall
    assert ahead.status == JobStatus.PENDING and ahead.stalls == 0  # it never began: nothing was lost
    assert get_redis().hget(keys.job(ids[1]), "fk_claimed") == b"0"


def test_a_stopping_prefork_worker_hands_back_its_claimed_ahead_jobs(jobs_env, start_worker):
    """SIGTERM while a slow job runs with jobs claimed ahead behind it: the slow one finishes, the
    others go back to the queue (in the same script as its end) and another worker runs each once."""
    r = get_redis()
    worker = start_worker("email", "--worker-class", "prefork", "--concurrency", "1", "--prefetch", "4",
                          env={"JOBS_WORKER_PREFETCH_BUDGET_MS": "60000"})
    email_queue.pause()
    quick = email_queue.enqueue_job("stoppable", {"key": "test:hb0", "seconds": 0})
    slow = email_queue.enqueue_job("stoppable", {"key": "test:hb1", "cooperative": False, "seconds": 1.5})
    rest = [email_queue.enqueue_job("stoppable", {"key": f"test:hb{i}", "seconds": 0}) for i in range(2, 5)]
    email_queue.resume()
    wait_until(lambda: r.get("test:hb1:runs") == b"1", timeout=10)
    assert finished(quick, timeout=10).status == JobStatus.COMPLETED
    wait_until(lambda: all(get_job(j).reason and get_job(j).reason.startswith("claimed by") for j in rest[:1]),
               timeout=5, message="a job claimed ahead behind the slow one")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert get_job(slow).status == JobStatus.COMPLETED
    for job_id in rest:
        job = get_job(job_id)
        assert job.status == JobStatus.PENDING and job.stalls == 0 and job.retry_count == 0, job
    assert r.zcard(keys.started(EMAIL)) == 0
    start_worker("email", "--worker-class", "simple")
    for i, job_id in enumerate(rest, start=2):
        assert finished(job_id, timeout=10).status == JobStatus.COMPLETED
        assert r.get(f"test:hb{i}:runs") == b"1"


def test_max_jobs_runs_exactly_that_many_and_claims_nothing_ahead(jobs_env, start_worker):
    """--max-jobs counts claims; a job claimed ahead would count and then be handed back unrun."""
    r = get_redis()
    ids = [email_queue.enqueue_job("stoppable", {"key": f"test:mj{i}", "seconds": 0}) for i in range(10)]
    worker = start_worker("email", "--worker-class", "prefork", "--concurrency", "1", "--max-jobs", "3",
                          env={"JOBS_WORKER_PREFETCH_BUDGET_MS": "60000"})
    assert worker.wait(timeout=30) == 0
    statuses = [get_job(job_id).status for job_id in ids]
    assert statuses.count(JobStatus.COMPLETED) == 3 and statuses.count(JobStatus.PENDING) == 7, statuses
    assert sum(1 for i in range(10) if r.get(f"test:mj{i}:runs")) == 3
    assert r.zcard(keys.started(EMAIL)) == 0
