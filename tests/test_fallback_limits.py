"""Limits hold while Redis is down: the fallback's runner threads claim spooled jobs under their
rate and concurrency limits (kept in the spool file), a held job shows as delayed with the reason,
other jobs are claimed past it, and the hand-back gives Redis each job's limits and priority. Redis is stopped for real; the tasks
write to a file, since Redis is not there to record anything."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.api.jobs import get_job
from core.api.queues import ai_queue, email_queue
from core.config import get_settings
from core.fallback.executor import get_fallback
from core.fallback.spool import Spool
from core.platform.connection import get_redis, redis_available
from core.platform.keys import job as job_key
from core.queue.job_model import Job, JobStatus
from tests.servers import ROOT, wait_until, worker_env

pytestmark = pytest.mark.fallback


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _all_final(ids: list[str], timeout: float = 30) -> list[Job]:
    return wait_until(lambda: all((j := get_job(i)) and j.status.is_final for i in ids) and [get_job(i) for i in ids],
                      timeout=timeout, interval=0.1, message="every fallback job to end")


def _down(jobs_env) -> None:
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5, message="health check to notice the outage")


def test_concurrency_limit_holds_in_the_fallback_and_other_keys_run_meanwhile(jobs_env, tmp_path):
    _down(jobs_env)
    assert get_settings().fallback_workers >= 3
    notes = tmp_path / "notes.txt"
    ids = [email_queue.enqueue_job("exclusive_noted", {"path": str(notes), "user": user, "seconds": 0.3})
           for _ in range(4) for user in ("ann", "bob")]
    held = wait_until(lambda: next((j for i in ids if (j := get_job(i)).reason), None), timeout=5,
                      message="a job held by the limit to show why")
    assert held.status == JobStatus.DELAYED and held.mode == "fallback"
    assert held.reason == f"concurrency limited: sync:{held.payload['user']} (at most 1 running)"
    jobs = _all_final(ids)
    assert {j.status for j in jobs} == {JobStatus.COMPLETED} and {j.mode for j in jobs} == {"fallback"}
    running: dict[str, int] = {"ann": 0, "bob": 0}
    most = dict(running)
    both_at_once = False
    for user, edge, _at in sorted(_lines(notes), key=lambda line: (float(line[2]), line[1] == "start")):
        running[user] += 1 if edge == "start" else -1
        most[user] = max(most[user], running[user])
        both_at_once |= running["ann"] == 1 and running["bob"] == 1
    assert most == {"ann": 1, "bob": 1}  # never two syncs of one user at once (4 threads were free)
    assert both_at_once  # ann's limit did not hold bob's jobs back


def test_rate_limit_spaces_fallback_jobs_and_other_tasks_pass_them(jobs_env, tmp_path):
    _down(jobs_env)
    notes = tmp_path / "notes.txt"
    limited = [ai_queue.enqueue_job("rate_noted", {"path": str(notes)}) for _ in range(5)]
    other = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    held = wait_until(lambda: next((j for i in limited if (j := get_job(i)).reason), None), timeout=5,
                      message="a job held by the limit to show why")
    assert held.reason == "rate limited: ai provider-noted 120/min" and held.status == JobStatus.DELAYED
    jobs = _all_final(limited + [other])
    assert {j.status for j in jobs} == {JobStatus.COMPLETED} and not any(j.reason for j in jobs)
    starts = sorted(float(at) for _name, at in _lines(notes))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 5 and min(gaps) >= 0.45, gaps  # 120/min: one every 0.5 s (4 threads were free)
    assert get_job(other).completed_at < starts[-1]  # not queued behind the limited jobs


def test_a_killed_holders_permit_ends_with_its_lease_and_the_next_job_runs(jobs_env, tmp_path):
    _down(jobs_env)
    notes, lease = tmp_path / "notes.txt", get_settings().fallback_lease
    code = ("import time\nfrom core.api.queues import email_queue\n"
            f"email_queue.enqueue_job('exclusive_noted_once', {{'path': {str(notes)!r}, 'user': 'dee', 'seconds': 600}}, "
            "job_id='long-sync', max_retries=0)\ntime.sleep(600)\n")
    env = worker_env(jobs_env.url, {"JOBS_FALLBACK_SPOOL": get_settings().fallback_spool, "JOBS_FALLBACK_WORKERS": "1"})
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_until(lambda: any(line[:2] == ["dee", "start"] for line in _lines(notes)), timeout=30,
                   message="the other process to start the long sync")
        os.killpg(holder.pid, signal.SIGKILL)
        killed_at = time.time()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
    following = email_queue.enqueue_job("exclusive_noted", {"path": str(notes), "user": "dee", "seconds": 0})
    waiting = wait_until(lambda: (j := get_job(following)).reason and j, timeout=5, message="the next sync to wait")
    assert waiting.reason == "concurrency limited: sync:dee (at most 1 running)"
    done = wait_until(lambda: (j := get_job(following)).status.is_final and j, timeout=lease + 10,
                      message="the permit to end with the dead holder's lease")
    assert done.status == JobStatus.COMPLETED
    assert done.started_at >= killed_at + lease / 3  # it waited for the lease (renewed every lease/3)
    long = get_job("long-sync")
    assert long.status == JobStatus.FAILED and "the process running it in the fallback died" in long.error
    assert [line[1] for line in _lines(notes)] == ["start", "start", "end"]  # the long one never ran again


def test_hand_back_gives_redis_the_jobs_limits_priority_and_deferrals(jobs_env, tmp_path):
    _down(jobs_env)
    notes = str(tmp_path / "notes.txt")
    held = email_queue.enqueue_job("exclusive_noted", {"path": notes, "user": "cy", "seconds": 0}, delay=60)
    low = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=60, priority="low")
    deferred = email_queue.enqueue_job("defer_noted", {"path": notes, "seconds": 60, "times": 1})
    assert get_job(held).mode == "fallback" and get_job(low).priority == "low"
    wait_until(lambda: get_job(deferred).deferrals == 1, timeout=5, message="the fallback to run and defer it")
    jobs_env.start()
    wait_until(lambda: get_fallback().pending_count() == 0, timeout=20,
               message="the runner threads to hand the spooled jobs to Redis")
    assert get_job(held).mode == "redis" and get_job(held).status == JobStatus.DELAYED
    limits = get_redis().hget(job_key(held), "fk_limits")
    assert limits is not None and b'"n":"conc:sync:cy"' in limits, limits
    assert get_job(low).priority == "low"
    handed = get_job(deferred)
    assert handed.mode == "redis" and handed.status == JobStatus.DELAYED and handed.deferrals == 1


def test_a_spool_file_from_before_limits_is_upgraded_and_its_jobs_still_run(jobs_env, tmp_path):
    path = tmp_path / "old-spool.db"
    old = Job(job_id="from-old-file", queue="email", task_name="add", status=JobStatus.PENDING,
              payload={"a": 1, "b": 1}, max_retries=0, created_at=time.time())
    Spool(path).add(old, time.time(), 1, None, 10)
    with sqlite3.connect(path) as raw:  # as the previous release wrote it: without the columns added since
        for column in ("limits", "reason", "deferrals"):
            raw.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    spool = Spool(path)
    job, abandoned = spool.claim("test-owner", 30)
    assert job is not None and job.id == "from-old-file" and job.limits is None and not abandoned
    assert job.reason is None and job.deferrals == 0
    assert spool.get("from-old-file").to_job().status == JobStatus.RUNNING
    Spool(path).add(Job(job_id="new-one", queue="email", task_name="add", status=JobStatus.PENDING,
                        payload={}, max_retries=0, created_at=time.time()), time.time(), 1, None, 10, '[{"n":"x"}]')
    assert Spool(path).get("new-one").limits == '[{"n":"x"}]'


def test_retry_after_in_the_fallback_is_a_deferral_not_a_retry(jobs_env, tmp_path):
    _down(jobs_env)
    notes = tmp_path / "notes.txt"
    job_id = email_queue.enqueue_job("defer_noted", {"path": str(notes), "seconds": 0.5, "times": 1}, max_retries=0)
    waiting = wait_until(lambda: (j := get_job(job_id)).reason and j, timeout=5, message="the deferral to show")
    assert waiting.status == JobStatus.DELAYED and waiting.deferrals == 1 and waiting.retry_count == 0
    assert waiting.reason == "retry after 0.5s: the peer said 429, run 1"
    done = wait_until(lambda: (j := get_job(job_id)).status.is_final and j, timeout=10)
    assert done.status == JobStatus.COMPLETED and done.result == 2 and done.retry_count == 0 and done.deferrals == 1
    first, second = (float(at) for _run, at in _lines(notes))
    assert second - first >= 0.5


def test_fallback_deferrals_are_bounded_and_the_job_fails_saying_so(jobs_env, tmp_path, setting):
    setting("JOBS_MAX_DEFERRALS", "2")
    _down(jobs_env)
    notes = tmp_path / "notes.txt"
    job_id = email_queue.enqueue_job("defer_noted", {"path": str(notes), "seconds": 0.1, "times": 10}, max_retries=3)
    done = wait_until(lambda: (j := get_job(job_id)).status.is_final and j, timeout=15)
    assert done.status == JobStatus.FAILED and done.deferrals == 2 and done.retry_count == 0
    assert "(deferred 2 times by Retry-After, the most allowed: JOBS_MAX_DEFERRALS=2)" in done.error
    assert len(_lines(notes)) == 3  # a Retry-After past the bound fails at once: it uses no retry
