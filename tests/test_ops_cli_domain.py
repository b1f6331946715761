"""The CLI's domain commands as subprocesses: `sync user <id>`, `ai thread <id>`, `ai bulk`,
against real Redis, a worker process, the fake Gmail API and SQLite/PostgreSQL."""

from __future__ import annotations

import json

from core.api.jobs import get_job
from core.platform.db import session_scope
from email_automation.gmail_sync_jobs import connect_account
from email_automation.models import EmailMessage
from tests.servers import wait_until
from tests.test_ops_cli import cli


def finished(job_id, timeout=30):
    return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=timeout)


def test_sync_user_queues_a_sync_that_a_worker_runs(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(3)
    connect_account("u1", "ada@example.com", "demo-access-token", "demo-refresh-token")
    made = cli(domain_env.url, "--json", "sync", "user", "u1", "--lookback-days", "7")
    assert made.returncode == 0, made.stderr
    job_id = json.loads(made.stdout)["job_id"]
    assert job_id.startswith("gmail-sync-")
    start_worker("email")
    job = finished(job_id)
    assert job.status.value == "completed", job.error
    assert (job.result["lookback_days"], job.result["messages_new"]) == (7, 3)
    bad = cli(domain_env.url, "sync", "user", "u1", "--type", "weekly")
    assert bad.returncode == 2 and "weekly" in bad.stderr


def test_ai_thread_and_bulk(domain_env, start_worker):
    with session_scope() as session:
        session.add_all([EmailMessage(user_id=u, gmail_id=f"g{i}", thread_id=t, sender="ada@example.com",
                                      subject="Pricing", snippet="Could you send a quote?")
                         for i, (u, t) in enumerate([("u1", "t1"), ("u1", "t2"), ("u2", "t3")])])
    made = cli(domain_env.url, "--json", "ai", "thread", "t1", "--task", "summarize", "--task", "tasks")
    assert made.returncode == 0, made.stderr
    start_worker("ai")
    job = finished(json.loads(made.stdout)["job_id"])
    assert job.status.value == "completed", job.error
    assert job.result["tasks_json"] == ["Could you send a quote?"] and "summary" in job.result
    missing = cli(domain_env.url, "ai", "thread", "no-such-thread")
    assert missing.returncode == 1 and "no stored messages in thread 'no-such-thread'" in missing.stderr
    bulk = cli(domain_env.url, "--json", "ai", "bulk", "--user", "u1", "--limit", "5")
    assert bulk.returncode == 0, bulk.stderr
    run = finished(json.loads(bulk.stdout)["job_id"])
    # t1 ran two of the four tasks, so it is still unprocessed: both of u1's threads are queued
    assert run.result["queued"] == 2 and run.result["users"] == 1
    assert cli(domain_env.url, "ai", "bulk", "--limit", "0").returncode == 2
