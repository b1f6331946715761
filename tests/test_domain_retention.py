"""Domain retention (issue 24, item 7): the nightly job prunes finished sync rows, sent mail and
processed AI rows older than FIKIRI_DOMAIN_RETENTION_DAYS, in batches, on SQLite and PostgreSQL,
run by a real worker process, and reports what it removed."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from core.api.queues import email_queue
from core.platform.db import session_scope
from core.schedule.periodic import periodic_definitions
from email_automation.models import EmailThread, SentEmail, SyncJob
from tests.conftest import finished
from tests.servers import wait_until

DAY = 86_400


def count(model, *where) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def seed(now: float) -> None:
    old, recent = now - 100 * DAY, now - 10 * DAY
    with session_scope() as session:
        session.add_all([
            SyncJob(user_id="u1", sync_type="manual", status="completed", created_at=old, completed_at=old),
            SyncJob(user_id="u2", sync_type="manual", status="failed", created_at=old, completed_at=old),
            SyncJob(user_id="u3", sync_type="manual", status="completed", created_at=old, completed_at=None),
            SyncJob(user_id="u4", sync_type="manual", status="running", created_at=old),  # never pruned
            SyncJob(user_id="u5", sync_type="manual", status="completed", created_at=old, completed_at=recent),
        ])
        session.add_all([SentEmail(job_key=f"old-{i}", to="a@b.c", subject="s", body="b",
                                   transport="outbox" if i % 2 else "smtp", status="outbox" if i % 2 else "sent",
                                   created_at=old + i) for i in range(1203)])
        session.add_all([SentEmail(job_key=f"new-{i}", to="a@b.c", subject="s", body="b", transport="smtp",
                                   status="sent", created_at=recent) for i in range(3)])
        session.add_all([
            EmailThread(user_id="u1", thread_id="t-old", summary="x", ai_processed_at=old),
            EmailThread(user_id="u1", thread_id="t-new", summary="y", ai_processed_at=recent),
            EmailThread(user_id="u1", thread_id="t-never", ai_processed_at=None),
        ])


def test_the_nightly_job_prunes_old_domain_rows_in_batches(domain_env, start_worker, setting):
    setting("FIKIRI_DOMAIN_RETENTION_BATCH", "500")
    seed(time.time())
    worker = start_worker("email", "--worker-class", "simple")
    job = finished(email_queue.enqueue_job("prune_domain_data", {}), timeout=60)
    assert (job.status.value, job.mode) == ("completed", "redis"), job.error
    report = job.result
    assert report["days"] == 90 and report["removed"] == {"email_threads": 1, "gmail_sync_jobs": 3, "sent_emails": 1203}
    assert report["batches"]["sent_emails"] == 3 and report["total"] == 1207  # 500 + 500 + 203 rows a transaction
    with session_scope() as session:
        assert sorted(session.scalars(select(SyncJob.user_id))) == ["u4", "u5"]
        assert sorted(session.scalars(select(EmailThread.thread_id))) == ["t-never", "t-new"]
    assert count(SentEmail) == 3 and count(SentEmail, SentEmail.job_key.like("old-%")) == 0
    wait_until(lambda: "domain retention: removed 1207 row(s) older than 90 days (email_threads=1, gmail_sync_jobs=3, "
                       "sent_emails=1203)" in worker.log(), timeout=10, message="the report's log line")


def test_shorter_retention_zero_keeps_everything_and_the_schedule(domain_env):
    from core.ops.retention import prune_domain_data

    seed(time.time())
    assert prune_domain_data(0) == {"days": 0, "cutoff": None, "removed": {}, "batches": {}, "total": 0}
    assert count(SentEmail) == 1206
    report = prune_domain_data(5)  # the rows 10 days old go too
    assert report["removed"] == {"email_threads": 2, "gmail_sync_jobs": 4, "sent_emails": 1206}
    assert count(SyncJob) == 1 and count(EmailThread) == 1
    [entry] = [d for d in periodic_definitions() if d.task == "prune_domain_data"]
    assert (entry.id, entry.queue, entry.cron) == ("periodic-domain-retention", "email", "0 2 * * *")
