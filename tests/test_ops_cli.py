"""The operator CLI (python -m scripts.jobs) as a subprocess against a real Redis: output,
--json, and exit codes for bad input, unknown jobs and an unreachable Redis."""

from __future__ import annotations

import json
import subprocess
import sys

from core.api.jobs import get_job
from core.api.queues import email_queue
from tests.servers import ROOT, wait_until, worker_env


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.jobs", *args], cwd=ROOT, env=worker_env(redis_url),
                          capture_output=True, text=True, timeout=60)


def test_enqueue_status_stats_and_json(jobs_env, start_worker):
    made = cli(jobs_env.url, "--json", "enqueue", "email", "add", "--payload", '{"a": 2, "b": 5}', "--user", "u9")
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["job_id"]
    start_worker("email")
    wait_until(lambda: get_job(job_id).status.value == "completed", timeout=20)
    status = json.loads(cli(jobs_env.url, "--json", "status", job_id).stdout)
    assert status["result"] == 7 and status["user_id"] == "u9"
    table = cli(jobs_env.url, "stats").stdout
    assert "QUEUE" in table and "email" in table
    assert json.loads(cli(jobs_env.url, "--json", "stats", "email").stdout)[0]["completed_jobs"] == 1
    recent = json.loads(cli(jobs_env.url, "--json", "recent", "--user", "u9").stdout)
    assert [j["job_id"] for j in recent] == [job_id]
    workers = json.loads(cli(jobs_env.url, "--json", "workers").stdout)
    assert len(workers) == 1 and "fikiri:email" in workers[0]["queues"]
    history = wait_until(lambda: json.loads(cli(jobs_env.url, "--json", "monitor", "history", "add").stdout),
                         timeout=10)  # flushed when the worker goes idle
    assert [h["job_id"] for h in history] == [job_id]


def test_failed_retry_all_and_cancel(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("fail_times", {"key": f"test:c{i}", "times": 1}, max_retries=0) for i in range(2)]
    worker = start_worker("email")
    for job_id in ids:
        wait_until(lambda j=job_id: get_job(j).status.value == "failed", timeout=20)
    failed = json.loads(cli(jobs_env.url, "--json", "failed", "email").stdout)
    assert sorted(j["job_id"] for j in failed) == sorted(ids)
    retried = cli(jobs_env.url, "retry", "--all", "--queue", "email")
    assert retried.returncode == 0 and "retried 2 job(s)" in retried.stdout
    for job_id in ids:
        wait_until(lambda j=job_id: get_job(j).status.value == "completed", timeout=20)
    worker.stop()
    delayed = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=600)
    assert cli(jobs_env.url, "cancel", delayed).returncode == 0
    again = cli(jobs_env.url, "cancel", delayed)
    assert again.returncode == 1 and "only pending" in again.stderr


def test_scheduler_commands(jobs_env):
    from core.schedule.periodic import register_periodic_jobs

    register_periodic_jobs()
    listing = cli(jobs_env.url, "scheduler", "list")
    assert "periodic-email-sync" in listing.stdout and "every 5 min" in listing.stdout
    assert cli(jobs_env.url, "scheduler", "pause", "periodic-daily-digest").returncode == 0
    entries = {e["id"]: e for e in json.loads(cli(jobs_env.url, "--json", "scheduler", "list").stdout)}
    assert entries["periodic-daily-digest"]["paused"] is True
    assert cli(jobs_env.url, "scheduler", "resume", "periodic-daily-digest").returncode == 0
    run = cli(jobs_env.url, "--json", "scheduler", "run", "periodic-nightly-cleanup")
    assert run.returncode == 0 and get_job(json.loads(run.stdout)["result"]).task_name == "nightly_cleanup"
    missing = cli(jobs_env.url, "scheduler", "pause", "nope")
    assert missing.returncode == 1 and "no periodic job 'nope'" in missing.stderr


def test_bad_input_and_unknown_things(jobs_env):
    unknown_task = cli(jobs_env.url, "enqueue", "email", "nope")
    assert unknown_task.returncode == 2 and "unknown task 'nope'" in unknown_task.stderr
    bad_json = cli(jobs_env.url, "enqueue", "email", "add", "--payload", "{oops")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    bad_queue = cli(jobs_env.url, "stats", "mail")
    assert bad_queue.returncode == 2 and "unknown queue 'mail'" in bad_queue.stderr
    missing = cli(jobs_env.url, "status", "no-such-job")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert cli(jobs_env.url, "monitor", "clear").returncode == 0


def test_unreachable_redis_exits_3_quickly(jobs_env):
    jobs_env.stop()
    result = cli(jobs_env.url, "stats")
    assert result.returncode == 3 and "unreachable" in result.stderr
