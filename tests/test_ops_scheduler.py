"""Periodic jobs on rq-scheduler: JSON storage, idempotent registration, runs at the right
time through a real scheduler process and worker, no double enqueue from two schedulers,
pause/resume/run/remove."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from core.api.jobs import get_job
from core.config import reload_settings
from core.errors import JobNotFoundError
from core.schedule.periodic import (
    list_periodic_jobs,
    pause_periodic,
    register_periodic_jobs,
    remove_periodic,
    resume_periodic,
    run_periodic_now,
)
from tests.servers import ROOT, wait_until, worker_env

FAST = {"EMAIL_SYNC_INTERVAL_MINUTES": "0.05", "AI_PROCESSING_INTERVAL_MINUTES": "0.1",
        "JOBS_SCHEDULER_INTERVAL": "0.5"}


@pytest.fixture
def fast_periodic(jobs_env, monkeypatch):
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    reload_settings()
    return jobs_env


def start_scheduler(redis_url: str, tmp_path, name: str) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "scripts/periodic_scheduler.py"], cwd=ROOT, env=worker_env(redis_url, FAST),
                            stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=20)


def test_registration_is_idempotent_and_replaces_changed_intervals(fast_periodic, monkeypatch):
    first = {e["id"]: e for e in register_periodic_jobs()}
    assert set(first) == {"periodic-email-sync", "periodic-ai-processing", "periodic-nightly-cleanup",
                          "periodic-daily-digest", "periodic-ai-threads", "periodic-user-digests",
                          "periodic-failure-alerts", "periodic-domain-retention"}
    assert first["periodic-email-sync"]["trigger"] == "every 3 s"
    assert first["periodic-nightly-cleanup"]["trigger"] == "cron 0 2 * * * UTC"
    client = fast_periodic.client()
    assert client.zcard("rq:scheduler:scheduled_jobs") == 8
    again = {e["id"]: e for e in register_periodic_jobs()}
    assert again == first  # unchanged definitions keep their next run
    monkeypatch.setenv("EMAIL_SYNC_INTERVAL_MINUTES", "2")
    reload_settings()
    changed = {e["id"]: e for e in register_periodic_jobs()}
    assert changed["periodic-email-sync"]["trigger"] == "every 2 min"
    assert client.zcard("rq:scheduler:scheduled_jobs") == 8


def test_periodic_jobs_are_stored_as_json_not_pickle(fast_periodic):
    register_periodic_jobs()
    raw = fast_periodic.client().hget("rq:job:periodic-email-sync", "data")
    import json
    import zlib

    try:
        raw = zlib.decompress(raw)
    except zlib.error:
        pass
    assert json.loads(raw)[0] == "sync_all_users"  # (func_name, instance, args, kwargs) as JSON
    meta = fast_periodic.client().hget("rq:job:periodic-email-sync", "meta")
    assert json.loads(meta)["periodic"] == "periodic-email-sync"


def test_scheduler_process_enqueues_runs_that_a_worker_completes(fast_periodic, start_worker, tmp_path):
    start_worker("email", "ai")
    scheduler = start_scheduler(fast_periodic.url, tmp_path, "scheduler")
    try:
        wait_until(lambda: (j := get_job("periodic-email-sync")) and j.status.value == "completed", timeout=30)
        first_run = {e["id"]: e for e in list_periodic_jobs()}["periodic-email-sync"]["last_run"]
        wait_until(lambda: {e["id"]: e for e in list_periodic_jobs()}["periodic-email-sync"]["last_run"]
                   > first_run + 2, timeout=30, message="a second run about 3 s later")
        ai = wait_until(lambda: (j := get_job("periodic-ai-processing")) and j.status.value == "completed" and j,
                        timeout=30)
        assert ai.result == {"queued": 0, "limit": 50}
        assert get_job("periodic-nightly-cleanup").status.value == "delayed"  # cron: not due yet
    finally:
        assert stop(scheduler) == 0


def test_two_schedulers_do_not_double_enqueue(fast_periodic, tmp_path):
    schedulers = [start_scheduler(fast_periodic.url, tmp_path, f"s{i}") for i in range(2)]
    try:
        time.sleep(8)  # about two intervals of the 3 s email sync, no worker running
    finally:
        for proc in schedulers:
            assert stop(proc) == 0
    client = fast_periodic.client()
    queued = [i.decode() for i in client.lrange("rq:queue:fikiri:email", 0, -1)]
    # Without a worker the first run stays queued, so later runs are skipped, never duplicated.
    assert queued.count("periodic-email-sync") == 1
    logs = "".join((tmp_path / f"s{i}.log").read_text() for i in range(2))
    assert "previous run has not finished" in logs or "already claimed" in logs


def test_pause_resume_run_and_remove(fast_periodic, start_worker):
    register_periodic_jobs()
    assert pause_periodic("periodic-daily-digest")["paused"] is True
    assert resume_periodic("periodic-daily-digest")["paused"] is False
    start_worker("email")
    job_id = run_periodic_now("periodic-nightly-cleanup")
    done = wait_until(lambda: (j := get_job(job_id)) and j.status.value == "completed" and j, timeout=20)
    assert set(done.result) >= {"queues", "user_index_ids_removed", "metrics_entries_removed"}
    remove_periodic("periodic-daily-digest")
    entry = {e["id"]: e for e in list_periodic_jobs()}["periodic-daily-digest"]
    assert entry["registered"] is False and entry["next_run"] is None
    with pytest.raises(JobNotFoundError, match="no periodic job 'periodic-daily-digest'"):
        pause_periodic("periodic-daily-digest")


def test_paused_job_is_not_enqueued_by_the_scheduler(fast_periodic, tmp_path):
    register_periodic_jobs()
    pause_periodic("periodic-email-sync")
    scheduler = start_scheduler(fast_periodic.url, tmp_path, "paused")
    try:
        time.sleep(5)
    finally:
        stop(scheduler)
    queued = [i.decode() for i in fast_periodic.client().lrange("rq:queue:fikiri:email", 0, -1)]
    assert "periodic-email-sync" not in queued
    assert "periodic-ai-processing" in [i.decode() for i in fast_periodic.client().lrange("rq:queue:fikiri:ai", 0, -1)]


def test_scheduler_http_endpoints(fast_periodic, client, monkeypatch):
    from tests.conftest import ADMIN_TOKEN

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    register_periodic_jobs()
    status = client.get("/api/jobs/scheduler/status", headers=admin).get_json()["data"]
    assert status["scheduled_total"] == 8 and {j["id"] for j in status["jobs"]} >= {"periodic-email-sync"}
    paused = client.post("/api/jobs/scheduler/periodic-email-sync/pause", headers=admin).get_json()["data"]
    assert paused["paused"] is True
    assert client.post("/api/jobs/scheduler/periodic-email-sync/resume", headers=admin).get_json()["data"]["paused"] is False
    run = client.post("/api/jobs/scheduler/periodic-nightly-cleanup/run", headers=admin)
    assert run.status_code == 202 and get_job(run.get_json()["data"]["job_id"]).task_name == "nightly_cleanup"
    assert client.delete("/api/jobs/scheduler/periodic-daily-digest", headers=admin).status_code == 200
    missing = client.post("/api/jobs/scheduler/periodic-daily-digest/pause", headers=admin)
    assert missing.status_code == 404 and "no periodic job" in missing.get_json()["error"]["message"]


def test_scheduler_process_survives_a_redis_restart(fast_periodic, tmp_path):
    scheduler = start_scheduler(fast_periodic.url, tmp_path, "restart")
    try:
        client = fast_periodic.client()
        wait_until(lambda: client.zcard("rq:scheduler:scheduled_jobs") == 8, timeout=20)
        fast_periodic.restart()  # no persistence: Redis comes back empty
        client = fast_periodic.client()
        wait_until(lambda: client.zcard("rq:scheduler:scheduled_jobs") == 8, timeout=40,
                   message="the scheduler to register its jobs again")
        wait_until(lambda: "periodic-email-sync" in [i.decode() for i in client.lrange("rq:queue:fikiri:email", 0, -1)],
                   timeout=20, message="a run to be enqueued after the restart")
        assert scheduler.poll() is None
    finally:
        assert stop(scheduler) == 0
