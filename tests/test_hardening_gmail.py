"""Gmail sync done right (issue 15), on SQLite and PostgreSQL: one active sync per user enforced by
the database under 8 concurrent triggers (through gunicorn and in-process), job ids that do not
collide across database resets, per-call full_sync and lookback_days with the seed's defaults."""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests
from sqlalchemy import select

from core.api.jobs import get_job
from core.config import reload_settings
from core.platform.auth import issue_user_token
from core.platform.db import dispose_engines, session_scope
from email_automation.gmail_sync_jobs import GmailSyncJobManager, SyncError, connect_account, process_gmail_sync
from email_automation.models import SyncJob
from tests.servers import wait_until

CONCURRENT = 8


def all_at_once(call: Callable[[int], object], n: int = CONCURRENT) -> list[object]:
    """Run ``call(i)`` in ``n`` threads released together by a barrier; results in order."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # reported by the assertion below, with the exception
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def rows_of(user: str) -> list[SyncJob]:
    with session_scope() as session:
        return list(session.scalars(select(SyncJob).where(SyncJob.user_id == user)))


def test_eight_concurrent_triggers_through_gunicorn_make_one_sync(domain_env, api_server):
    for round_ in range(5):
        user = f"racer{round_}"
        headers = {"Authorization": f"Bearer {issue_user_token(user)}"}
        answers = all_at_once(lambda _i, h=headers: requests.post(api_server.url("/api/jobs/sync/trigger"),
                                                                  json={}, headers=h, timeout=60))
        refused = [a if not isinstance(a, requests.Response) else f"{a.status_code} {a.text[:500]}"
                   for a in answers if not isinstance(a, requests.Response) or a.status_code != 202]
        assert not refused, f"round {round_}: {len(refused)} of {CONCURRENT} triggers not accepted: {refused}"
        job_ids = {a.json()["data"]["job_id"] for a in answers}
        assert len(job_ids) == 1, job_ids
        rows = rows_of(user)
        assert [(r.status, r.queue_job_id) for r in rows] == [("pending", job_ids.pop())], "duplicates or failed rows"


def test_eight_concurrent_triggers_in_process_make_one_sync(domain_env):
    manager = GmailSyncJobManager()
    for round_ in range(5):
        user = f"local{round_}"
        ids = all_at_once(lambda _i, u=user: manager.queue_sync_job(u))
        assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 1, ids
        assert [r.status for r in rows_of(user)] == ["pending"]
        assert get_job(ids[0]).user_id == user


def test_sync_job_ids_do_not_collide_after_a_database_reset(domain_env, tmp_path, monkeypatch):
    first = GmailSyncJobManager().queue_sync_job("alice")
    dispose_engines()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'restored.db'}")  # row ids restart at 1
    reload_settings()
    second = GmailSyncJobManager().queue_sync_job("bob")
    assert first.startswith("gmail-sync-1-") and second.startswith("gmail-sync-1-") and first != second
    assert get_job(first).user_id == "alice" and get_job(second).user_id == "bob"
    # alice's job, run against the new database, must not run bob's row
    try:
        process_gmail_sync(1, user_id="alice")
    except SyncError as exc:
        assert "belongs to another user" in str(exc)
    else:
        raise AssertionError("alice's job ran bob's sync row")
    assert rows_of("bob")[0].status == "pending"


def test_per_call_lookback_days_and_full_sync_with_the_seed_defaults(domain_env, fake_gmail, start_worker):
    connect_account("u1", "u1@example.com", "demo-access-token", "demo-refresh-token")
    fake_gmail.add_messages(3)
    start_worker("email")
    manager = GmailSyncJobManager()

    def run(**options: object):
        job_id = manager.queue_sync_job("u1", "incremental", **options)
        return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=40)

    def windows() -> list[str]:
        return [q["q"][0] for path, q in fake_gmail.queries if path.endswith("/messages") and "q" in q]

    first = run()  # no history id yet: a full listing over the default window
    assert first.status.value == "completed" and first.result["lookback_days"] == 90
    assert windows() == ["newer_than:90d"]
    second = run()  # history id stored: incremental, no listing
    assert second.result["mode"] == "incremental" and windows() == ["newer_than:90d"]
    third = run(full_sync=True, lookback_days=7)
    assert third.result["mode"] == "full" and windows() == ["newer_than:90d", "newer_than:7d"]
