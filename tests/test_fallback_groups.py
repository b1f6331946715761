"""Job groups in the fallback spool (Redis stopped for real): the runner threads claim spooled jobs
round-robin across groups, so one tenant's 500 jobs do not starve another tenant's 5;
``group_concurrency`` holds across the runners; the hand-back gives Redis each job's group, and a
worker then runs it there in its group. The tasks write to a file, since Redis is not there."""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.config import get_settings
from core.fallback.executor import get_fallback
from core.fallback.spool import Spool
from core.platform import keys
from core.platform.connection import get_redis, redis_available, reset_connections
from core.queue.job_model import Job, JobStatus
from tests.servers import ROOT, wait_spooled, wait_until, worker_env

pytestmark = [pytest.mark.fallback, pytest.mark.timeout(180)]


def _runs(path: Path) -> list[tuple[str, str, float, float]]:
    """(tenant, item, start, end) per ended run, in start order."""
    lines = path.read_text().split("\n") if path.exists() else []
    runs = [(t, i, float(s), float(e)) for t, i, s, e, _pid in (line.split() for line in lines if line)]
    return sorted(runs, key=lambda run: run[2])


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _e in spans] + [(e, -1) for _s, e in spans], key=lambda x: (x[0], x[1]))
    running = most = 0
    for _at, step in edges:
        running += step
        most = max(most, running)
    return most


def _down(jobs_env) -> None:
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5, message="health check to notice the outage")


def test_one_tenants_500_spooled_jobs_do_not_starve_another_tenants_5(jobs_env, tmp_path):
    _down(jobs_env)
    runners = get_settings().fallback_workers
    notes = tmp_path / "runs.txt"
    heavy = email_queue.enqueue_many("group_noted", [{"path": str(notes), "tenant": "heavy", "item": f"h{i}",
                                                      "seconds": 0.02} for i in range(500)])
    assert get_job(heavy[0]).mode == "fallback" and get_job(heavy[0]).group == "heavy"
    light_at = time.time()
    light = [email_queue.enqueue_job("group_noted", {"path": str(notes), "tenant": "light", "item": f"l{i}",
                                                     "seconds": 0.02}) for i in range(5)]
    wait_until(lambda: all(get_job(i).status.is_final for i in light), timeout=60, interval=0.05,
               message="the light tenant's jobs to end")
    after = [run for run in _runs(notes) if run[2] >= light_at]
    light_ranks = [rank for rank, run in enumerate(after) if run[0] == "light"]
    assert len(light_ranks) == 5
    # taking turns: each light job waits for at most one heavy job per turn, plus the runs already
    # going when it arrived (one per runner); FIFO would put them behind every heavy job left
    assert light_ranks[-1] < 2 * 5 + runners, (light_ranks, len(after))
    left = sum(1 for i in heavy if not get_job(i).status.is_final)
    print(f"light tenant's runs ranked {light_ranks} among the runs started after it arrived; {left} heavy left")
    assert left >= 100, f"the heavy backlog should still be there when the light jobs ended ({left} left)"
    assert all(get_job(i).status == JobStatus.COMPLETED and get_job(i).mode == "fallback" for i in light)
    wait_until(lambda: all(get_job(i).status.is_final for i in heavy), timeout=120, interval=0.2,
               message="the heavy backlog to drain")
    assert len(_runs(notes)) == 505 and {get_job(i).status for i in heavy} == {JobStatus.COMPLETED}


def test_group_concurrency_holds_in_the_spool_and_other_groups_run_meanwhile(jobs_env, tmp_path):
    _down(jobs_env)
    assert get_settings().fallback_workers >= 4
    notes = tmp_path / "runs.txt"
    capped = email_queue.enqueue_many("group_noted", [{"path": str(notes), "tenant": "capped", "item": f"c{i}",
                                                       "seconds": 0.15} for i in range(12)], group_concurrency=2)
    other = [email_queue.enqueue_job("group_noted", {"path": str(notes), "tenant": "other", "item": f"o{i}",
                                                     "seconds": 0.15}) for i in range(6)]
    wait_until(lambda: all(get_job(i).status.is_final for i in capped + other), timeout=60, interval=0.1,
               message="every job to end")
    runs = _runs(notes)
    assert len(runs) == 18 and {get_job(i).status for i in capped + other} == {JobStatus.COMPLETED}
    capped_spans = [(s, e) for t, _i, s, e in runs if t == "capped"]
    assert _most_at_once(capped_spans) == 2  # never 3 (4 runners were free), and the cap was reached
    other_spans = [(s, e) for t, _i, s, e in runs if t == "other"]
    assert _most_at_once(other_spans) >= 2  # the runners the capped group could not use served the other
    assert min(s for s, _e in other_spans) < max(s for s, _e in capped_spans)  # not queued behind the cap


def test_group_concurrency_counts_every_process_on_the_spool(jobs_env, tmp_path):
    """Two spools on one file (as two web processes have): the running rows are the permits."""
    path = tmp_path / "shared.db"
    first, second = Spool(path), Spool(path)
    for i in range(4):
        first.add(Job(job_id=f"g{i}", queue="email", task_name="add", status=JobStatus.PENDING, payload={},
                      max_retries=0, created_at=time.time()), time.time(), 1, None, 100, group="acct-1",
                  group_concurrency=2)
    first.add(Job(job_id="u0", queue="email", task_name="add", status=JobStatus.PENDING, payload={}, max_retries=0,
                  created_at=time.time()), time.time(), 1, None, 100)
    taken = [first.claim("p1", 30)[0], second.claim("p2", 30)[0], second.claim("p2", 30)[0]]
    assert [job.id if job else None for job in taken] == ["u0", "g0", "g1"]  # turns: ungrouped, acct-1, acct-1
    assert second.claim("p2", 30) == (None, False)  # acct-1 holds 2 running: its other jobs wait
    assert first.get("g2").status == "pending"
    assert first.end("g0", "p2", "completed", "1", None)
    assert second.claim("p2", 0.5)[0].id == "g2"  # a permit came back
    time.sleep(0.6)  # p2's lease on g2 runs out (it "died"): the permit goes with it
    job, abandoned = first.claim("p1", 30)
    assert job.id == "g2" and abandoned  # taken over first, within its group's turn
    assert first.claim("p1", 30) == (None, False)  # g1 and g2 run: g3 waits


def test_the_group_survives_the_hand_back_and_the_job_runs_grouped_in_redis(jobs_env, start_worker, tmp_path):
    _down(jobs_env)
    notes = tmp_path / "runs.txt"
    ran = email_queue.enqueue_job("group_noted", {"path": str(notes), "tenant": "acct-7", "item": "ran"})
    waiting = [email_queue.enqueue_job("group_noted", {"path": str(notes), "tenant": "acct-7", "item": f"w{i}"},
                                       delay=3, group_concurrency=1) for i in range(3)]
    done = wait_until(lambda: (j := get_job(ran)).status.is_final and j, timeout=10)
    assert done.mode == "fallback" and done.group == "acct-7" and done.status == JobStatus.COMPLETED
    assert get_job(waiting[0]).group == "acct-7" and get_job(waiting[0]).mode == "fallback"
    jobs_env.start()
    wait_until(lambda: get_fallback().pending_count() == 0 and not get_fallback().spool.finished(), timeout=20,
               message="the runner threads to hand the spool to Redis")
    connection = get_redis()
    handed = get_job(waiting[0])
    assert handed.mode == "redis" and handed.group == "acct-7" and handed.status == JobStatus.DELAYED
    assert connection.hmget(keys.job(waiting[0]), "fk_group", "fk_gconc") == [b"acct-7", b"1"]
    assert get_job(ran).mode == "fallback" and get_job(ran).group == "acct-7"  # its outcome, now read from Redis
    assert connection.exists(keys.job(ran))
    worker = start_worker("email", "--worker-class", "simple")
    jobs = wait_until(lambda: all(get_job(i).status.is_final for i in waiting) and [get_job(i) for i in waiting],
                      timeout=30, interval=0.2, message="the worker to run the handed-back jobs")
    assert {(j.status, j.mode, j.group) for j in jobs} == {(JobStatus.COMPLETED, "redis", "acct-7")}
    assert sorted(i for _t, i, _s, _e in _runs(notes)) == ["ran", "w0", "w1", "w2"]
    worker.stop()
    full = get_settings().full_queue_name("email")
    assert not connection.exists(keys.group_waiting(full, "normal", "acct-7"))  # nothing left in its list
    assert not connection.hget(keys.group_running(full), "acct-7")  # its running count came back to 0


def test_a_spool_file_from_before_groups_gains_them_and_its_jobs_still_run(tmp_path):
    path = tmp_path / "old-spool.db"
    old = Job(job_id="from-old-file", queue="email", task_name="add", status=JobStatus.PENDING,
              payload={"a": 1, "b": 1}, max_retries=0, created_at=time.time())
    Spool(path).add(old, time.time(), 1, None, 10)
    with sqlite3.connect(path) as raw:  # as the previous release wrote it: no group columns, no rotation
        raw.execute("DROP INDEX jobs_group_due")
        raw.execute("DROP TABLE job_groups")
        for column in ("grp", "gconc"):
            raw.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    spool = Spool(path)
    job, abandoned = spool.claim("test-owner", 30)
    assert job is not None and job.id == "from-old-file" and job.group is None and not abandoned
    spool.add(Job(job_id="new-one", queue="email", task_name="add", status=JobStatus.PENDING, payload={},
                  max_retries=0, created_at=time.time()), time.time(), 1, None, 10, group="acct-2")
    assert spool.get("new-one").group == "acct-2" and spool.get("new-one").to_job().group == "acct-2"
    assert spool.claim("test-owner", 30)[0].id == "new-one"


def _spool_process(redis_url: str, spool: Path, notes: Path, tenants: list[str], per_tenant: int) -> subprocess.Popen:
    """A web-like process on the spool: it spools ``per_tenant`` grouped jobs for each tenant (none
    when ``per_tenant`` is 0: a restarted process, which resumes the spool on first use), then runs them."""
    code = (
        "import time\n"
        "from core.api.queues import email_queue\n"
        "from core.fallback.executor import get_fallback\n"
        f"for tenant in {tenants!r}:\n"
        f"    for i in range({per_tenant}):\n"
        f"        email_queue.enqueue_job('group_noted', {{'path': {str(notes)!r}, 'tenant': tenant, "
        f"'item': f'{{tenant}}-{{i}}', 'seconds': 0.15}}, job_id=f'{{tenant}}-{{i}}', group_concurrency=2)\n"
        "get_fallback().resume_if_needed()\n"
        "print('spooled', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = worker_env(redis_url, {"JOBS_FALLBACK_SPOOL": str(spool), "JOBS_FALLBACK_WORKERS": "3"})
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _spool_is_exact(spool: Path) -> tuple[int, int]:
    """Every group with a waiting or running row is in the rotation (else its jobs would never be
    claimed); returns (unfinished rows, rotation rows)."""
    with contextlib.closing(sqlite3.connect(spool, timeout=10)) as db:
        missing = db.execute(
            "SELECT count(*) FROM jobs AS j WHERE status IN ('pending', 'delayed', 'retrying', 'running') "
            "AND NOT EXISTS (SELECT 1 FROM job_groups AS g WHERE g.queue = j.queue AND g.priority = j.priority "
            "AND g.grp = j.grp)").fetchone()[0]
        assert missing == 0, f"{missing} spooled jobs have no place in the rotation"
        unfinished = db.execute("SELECT count(*) FROM jobs WHERE status IN ('pending', 'delayed', 'retrying', "
                                "'running', 'handing')").fetchone()[0]
        return unfinished, db.execute("SELECT count(*) FROM job_groups").fetchone()[0]


def test_kill_loop_on_the_spool_with_groups_loses_nothing_and_keeps_group_concurrency(jobs_env, start_worker,
                                                                                       tmp_path):
    """SIGKILL the processes running grouped spooled jobs 8 times, then kill them all and bring
    Redis back: a worker takes the spool over and every job completes once, in its group, with
    every extra run a counted stall and never more than 2 of one tenant's jobs running at once,
    in the spool (across processes) or in Redis."""
    spool, notes = tmp_path / "loop-spool.db", tmp_path / "runs.txt"
    tenants, per_tenant = ["t0", "t1", "t2", "t3"], 50
    total = len(tenants) * per_tenant
    jobs_env.stop()
    rng = random.Random(23)
    procs = [_spool_process(jobs_env.url, spool, notes, tenants, per_tenant)]
    try:
        wait_spooled(procs[0])
        procs.append(_spool_process(jobs_env.url, spool, notes, [], 0))
        wait_spooled(procs[1])
        for _kill in range(8):
            time.sleep(rng.uniform(0.3, 0.9))
            victim = procs.pop(rng.randrange(len(procs)))
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            unfinished, rotation = _spool_is_exact(spool)
            assert unfinished == 0 or rotation > 0
            procs.append(_spool_process(jobs_env.url, spool, notes, [], 0))
            wait_spooled(procs[-1])
        done_in_spool = len(_runs(notes))
        assert 0 < done_in_spool < total, f"{done_in_spool} of {total} ran before Redis came back"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    _spool_is_exact(spool)
    jobs_env.start()
    start_worker("email", "--concurrency", "2", env={"JOBS_FALLBACK_SPOOL": str(spool)})
    start_worker("email", "--worker-class", "threaded", "--concurrency", "4", env={"JOBS_FALLBACK_SPOOL": str(spool)})
    ids = [f"{t}-{i}" for t in tenants for i in range(per_tenant)]
    runs = wait_until(lambda: len({item for _t, item, _s, _e in _runs(notes)}) == total and _runs(notes),
                      timeout=180, interval=0.5, message=f"all {total} jobs to run")
    reset_connections()
    by_item = collections.Counter(item for _t, item, _s, _e in runs)
    assert set(by_item) == set(ids)
    wait_until(lambda: email_queue.get_stats()["total_results"] == total, timeout=60, interval=0.5,
               message="every job to end in Redis")
    stats = email_queue.get_stats()
    assert stats["completed_jobs"] == total and stats["failed_jobs"] == 0 and stats["pending_jobs"] == 0
    for job_id in ids:
        job = get_job(job_id)
        assert job.status == JobStatus.COMPLETED and job.group == job_id.split("-")[0], job
        assert by_item[job_id] - 1 <= job.stalls, (job_id, by_item[job_id], job.stalls)  # an extra run is a stall
    assert not _spool_is_exact(spool)[0]  # the spool handed everything over
    for tenant in tenants:
        spans = [(s, e) for t, _i, s, e in runs if t == tenant]
        assert _most_at_once(spans) <= 2, (tenant, _most_at_once(spans))
    extra, stalls = sum(by_item.values()) - total, sum(get_job(job_id).stalls for job_id in ids)
    assert stalls > 0, "no kill landed on a running job: the loop did not exercise the take-over"
    print(f"spool kill loop: 8 kills, {done_in_spool} ran in the spool, {stalls} stalls, {extra} extra runs, 0 lost")
