"""Crashes are stalls in the in-process fallback too (DESIGN.md, issue 21 item 2): when a process
running a spooled job dies, the process that takes its lease over records a stall (stalls + 1,
no retry used), runs it again, and fails it as a repeat crash past the task's max_stalls; a
hand-back to Redis carries the stalls. A real SQLite spool file and the executor's own paths."""

from __future__ import annotations

import time

from core.api.jobs import get_job
from core.fallback.executor import FallbackExecutor
from core.fallback.spool import Spool
from core.platform.connection import get_redis
from core.queue.job_model import Job, JobStatus

LEASE = 0.05  # s: the "dead" holder's lease runs out at once


def _spool_one(path, job_id: str = "fb-1") -> Spool:
    spool = Spool(path)
    spool.add(Job(job_id=job_id, queue="email", task_name="add", status=JobStatus.PENDING, payload={"a": 2, "b": 3},
                  max_retries=0, created_at=time.time()), time.time(), 1, None, 100)
    return spool


def _take_over(spool: Spool, owner: str):
    time.sleep(LEASE * 2)  # the previous holder "died": its lease ran out
    job, abandoned = spool.claim(owner, LEASE)
    assert job is not None
    return job, abandoned


def test_a_taken_over_lease_is_a_stall_not_a_retry(jobs_env, tmp_path):
    spool = _spool_one(tmp_path / "spool.db")
    first, abandoned = spool.claim("dead-a", LEASE)
    assert not abandoned and first.stalls == 0
    job, abandoned = _take_over(spool, "dead-b")
    assert abandoned and job.stalls == 1 and job.retry_count == 0
    view = spool.get("fb-1").to_job()
    assert view.stalls == 1 and view.retry_count == 0 and view.status == JobStatus.RUNNING


def test_the_first_stall_runs_again_and_the_next_fails_as_a_repeat_crash(jobs_env, tmp_path):
    spool = _spool_one(tmp_path / "spool.db")
    runner = FallbackExecutor(spool=spool)
    spool.claim("dead-a", LEASE)
    job, abandoned = _take_over(spool, runner.owner)
    runner._run(job, abandoned)  # stalls 1 <= max_stalls 1: it runs (max_retries=0 did not matter)
    done = spool.get("fb-1").to_job()
    assert done.status == JobStatus.COMPLETED and done.result == 5 and done.stalls == 1

    spool = _spool_one(tmp_path / "spool2.db", "fb-2")
    runner = FallbackExecutor(spool=spool)
    spool.claim("dead-a", LEASE)
    _take_over(spool, "dead-b")
    job, abandoned = _take_over(spool, runner.owner)
    assert job.stalls == 2
    runner._run(job, abandoned)
    failed = spool.get("fb-2").to_job()
    assert failed.status == JobStatus.FAILED and failed.stalls == 2
    assert "repeat crash" in failed.error and "max_stalls=1" in failed.error


def test_a_hand_back_carries_the_stalls_into_redis(jobs_env, tmp_path):
    spool = _spool_one(tmp_path / "spool.db", "fb-3")
    spool.claim("dead-a", LEASE)  # its holder dies mid-run; Redis is back
    time.sleep(LEASE * 2)
    runner = FallbackExecutor(spool=spool)
    runner.lease = LEASE
    assert runner.hand_back(get_redis()) == 1
    job = get_job("fb-3")
    assert job.mode == "redis" and job.status == JobStatus.PENDING
    assert job.stalls == 1 and job.retry_count == 0
