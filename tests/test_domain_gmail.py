"""Gmail sync against a fake Gmail API on loopback, run by real worker processes, on SQLite and
PostgreSQL: first and incremental syncs, no duplicates on re-runs, token refresh, back-off on
429/5xx, a sync killed midway and re-run, one active sync per user, sync_all_users."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from core.api.jobs import get_job
from core.platform.db import session_scope
from email_automation.gmail_sync_jobs import GmailSyncJobManager, connect_account, sync_all_users
from email_automation.models import EmailMessage, GmailAccount, SyncJob
from tests.servers import wait_until


def message_count(user: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(EmailMessage).where(EmailMessage.user_id == user))


def finished(job_id: str, timeout: float = 40):
    return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=timeout,
                      message=f"sync {job_id}")


def connect(user: str = "u1") -> None:
    connect_account(user, f"{user}@example.com", "demo-access-token", "demo-refresh-token")


def test_first_incremental_and_repeated_syncs(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(25)
    connect()
    start_worker("email")
    manager = GmailSyncJobManager()
    first = finished(manager.queue_sync_job("u1", "full"))
    assert first.status.value == "completed", first.error
    assert first.result["messages_synced"] == 25 and first.result["messages_new"] == 25
    assert first.progress == {"done": 25, "total": 25, "stage": "fetching"}
    assert message_count("u1") == 25
    fake_gmail.add_messages(3)
    incremental = finished(manager.queue_sync_job("u1", "incremental"))
    assert incremental.result["mode"] == "incremental" and incremental.result["messages_new"] == 3
    assert any(r.startswith("GET /gmail/v1/users/me/history") for r in fake_gmail.requests)
    again = finished(manager.queue_sync_job("u1", "full"))
    assert again.result["messages_synced"] == 28 and again.result["messages_new"] == 0
    assert message_count("u1") == 28
    with session_scope() as session:
        rows = session.scalars(select(SyncJob).order_by(SyncJob.id)).all()
        assert [r.status for r in rows] == ["completed"] * 3 and rows[1].messages_new == 3


def test_expired_token_is_refreshed_and_stored(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(5)
    connect()
    fake_gmail.expire_access_tokens()
    start_worker("email")
    job = finished(GmailSyncJobManager().queue_sync_job("u1"))
    assert job.status.value == "completed" and fake_gmail.token_refreshes == 1
    with session_scope() as session:
        assert session.scalar(select(GmailAccount.access_token)) == "access-1"


def test_rate_limit_and_server_errors_back_off_and_recover(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(4)
    connect()
    fake_gmail.fail_next("/messages", 429, {"Retry-After": "1"})
    fake_gmail.fail_next("/messages/msg00002", 500, times=2)
    start_worker("email")
    started = time.monotonic()
    job = finished(GmailSyncJobManager().queue_sync_job("u1"))
    assert job.status.value == "completed" and job.retry_count == 0
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert message_count("u1") == 4


def test_sync_killed_midway_is_rerun_to_exactly_the_right_count(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(40)
    connect()
    fake_gmail.delay = 0.05
    victim = start_worker("email")
    job_id = GmailSyncJobManager().queue_sync_job("u1", "full")
    wait_until(lambda: message_count("u1") >= 10, timeout=30, message="the sync to get going")
    victim.kill_hard()
    assert message_count("u1") < 40
    fake_gmail.delay = 0.0
    start_worker("email")
    job = finished(job_id, timeout=60)
    assert job.status.value == "completed" and job.retry_count == 0 and job.stalls == 1  # a stall, not a retry
    assert message_count("u1") == 40


def test_one_active_sync_per_user_and_sync_all_users(domain_env, fake_gmail):
    connect("u1")
    connect("u2")
    manager = GmailSyncJobManager()
    pending = manager.queue_sync_job("u1")
    assert manager.queue_sync_job("u1", "full") == pending
    result = sync_all_users()
    assert result["queued"] == 2 and result["jobs"]["u1"] == pending
    assert result["jobs"]["u2"] != pending and get_job(result["jobs"]["u2"]).user_id == "u2"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SyncJob)) == 2


def test_no_connected_account_fails_with_a_reason(domain_env, fake_gmail, start_worker):
    start_worker("email")
    job = finished(GmailSyncJobManager().queue_sync_job("nobody"))
    assert job.status.value == "failed" and job.result is None
    assert "SyncError: user nobody has no connected Gmail account" in job.error
    with session_scope() as session:
        assert session.scalar(select(SyncJob.error)) == "no connected Gmail account"
