"""Gmail sync job manager: queue a sync for a user, and the task that runs it.

``queue_sync_job`` writes a ``gmail_sync_jobs`` row and enqueues ``process_gmail_sync`` with the
queue job id ``gmail-sync-<row id>``, so one id serves the API and the database. A user with a
sync pending or running gets that sync's id back instead of a second one.

``process_sync_job`` lists the user's messages (full: ``newer_than:Nd``; incremental: Gmail's
history from the stored history id), fetches each message's metadata and upserts it, reporting
progress as it goes. Upserts make a re-run — after a crash or a retry — never duplicate.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.config import get_settings
from core.db import session_scope
from core.progress import report_progress
from core.redis_queues import email_queue, get_job
from email_automation.gmail_client import GmailClient, HistoryExpiredError
from email_automation.models import EmailMessage, GmailAccount, SyncJob

logger = logging.getLogger(__name__)

SYNC_TYPES = ("manual", "incremental", "full")
ACTIVE = ("pending", "running")


class SyncError(RuntimeError):
    """A sync cannot run (no connected account, unknown sync row...)."""


def connect_account(user_id: str | int, email: str, access_token: str, refresh_token: str) -> None:
    """Store (or update) a user's Gmail tokens: what the OAuth callback of the host app calls."""
    with session_scope() as session:
        account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == str(user_id)))
        if account is None:
            account = GmailAccount(user_id=str(user_id), email=email)
            session.add(account)
        account.email, account.access_token, account.refresh_token = email, access_token, refresh_token
        account.connected = True


class GmailSyncJobManager:
    def queue_sync_job(self, user_id: str | int, sync_type: str = "manual") -> str:
        """Queue a sync for the user; returns the job id (an existing one if a sync is active)."""
        if sync_type not in SYNC_TYPES:
            raise ValueError(f"unknown sync_type {sync_type!r}; accepted: {', '.join(SYNC_TYPES)}")
        user = str(user_id)
        with session_scope() as session:
            active = session.scalar(select(SyncJob).where(SyncJob.user_id == user, SyncJob.status.in_(ACTIVE))
                                    .order_by(SyncJob.id.desc()))
            if active is not None and self._still_queued(active):
                return active.queue_job_id
            row = SyncJob(user_id=user, sync_type=sync_type, status="pending")
            session.add(row)
            session.flush()
            row_id, queue_job_id = row.id, row.queue_job_id
        email_queue.enqueue_job("process_gmail_sync", {"job_id": row_id}, job_id=queue_job_id, user_id=user,
                                max_retries=3)
        return queue_job_id

    @staticmethod
    def _still_queued(row: SyncJob) -> bool:
        """An 'active' row whose job is gone (expired, fallback lost at restart) is not active."""
        job = get_job(row.queue_job_id)
        if job is None or job.status.is_final:
            row.status = "failed" if job is None or job.status.value != "completed" else "completed"
            row.error = row.error or "the queue job ended without updating this row"
            return False
        return True

    def process_sync_job(self, job_id: int) -> dict[str, Any]:
        """The ``process_gmail_sync`` task: run sync row ``job_id``."""
        with session_scope() as session:
            row = session.get(SyncJob, int(job_id))
            if row is None:
                raise SyncError(f"sync job {job_id} does not exist")
            account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == row.user_id))
            if account is None or not account.connected:
                row.status, row.error, row.completed_at = "failed", "no connected Gmail account", time.time()
                return {"status": "failed", "error": "no connected Gmail account"}
            row.status, row.started_at = "running", time.time()
            user, sync_type = row.user_id, row.sync_type
            tokens = (account.access_token, account.refresh_token, account.history_id)
        try:
            counts = self._sync(user, sync_type, *tokens)
        except Exception as exc:
            with session_scope() as session:
                row = session.get(SyncJob, int(job_id))
                row.status, row.error, row.completed_at = "failed", f"{type(exc).__name__}: {exc}", time.time()
            raise
        with session_scope() as session:
            row = session.get(SyncJob, int(job_id))
            row.status, row.completed_at, row.error = "completed", time.time(), None
            row.messages_synced, row.messages_new = counts["messages_synced"], counts["messages_new"]
        return {"sync_job_id": int(job_id), "user_id": user, "sync_type": sync_type, **counts}

    def _sync(self, user: str, sync_type: str, access: str, refresh: str, history_id: str | None) -> dict[str, Any]:
        def save_token(token: str) -> None:
            with session_scope() as session:
                account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == user))
                account.access_token = token

        client = GmailClient(access, refresh, on_token_refresh=save_token)
        new_history = None
        mode = "full"
        if sync_type == "incremental" and history_id:
            try:
                ids, new_history = client.history_message_ids(history_id)
                mode = "incremental"
            except HistoryExpiredError:
                ids = []
                mode = "full"
        if mode == "full":
            new_history = client.profile_history_id()
            ids = list(client.list_message_ids(f"newer_than:{get_settings().gmail_lookback_days}d"))
        total, new = len(ids), 0
        report_progress({"done": 0, "total": total, "stage": "fetching"})
        for index, message_id in enumerate(ids, start=1):
            new += self._upsert(user, client.get_metadata(message_id))
            if index % 10 == 0 or index == total:
                report_progress({"done": index, "total": total, "stage": "fetching"})
        with session_scope() as session:
            account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == user))
            if new_history:
                account.history_id = new_history
        return {"mode": mode, "messages_synced": total, "messages_new": new}

    @staticmethod
    def _upsert(user: str, meta: dict[str, Any]) -> int:
        """Insert or update one message; 1 if it was new."""
        fields = {k: meta[k] for k in ("thread_id", "subject", "sender", "snippet", "internal_date")}
        for _attempt in range(2):
            try:
                with session_scope() as session:
                    row = session.scalar(select(EmailMessage).where(EmailMessage.user_id == user,
                                                                    EmailMessage.gmail_id == meta["id"]))
                    if row is None:
                        session.add(EmailMessage(user_id=user, gmail_id=meta["id"], **fields))
                        return 1
                    for key, value in fields.items():
                        setattr(row, key, value)
                    return 0
            except IntegrityError:  # a concurrent run inserted it first: update it next time round
                continue
        return 0


def process_gmail_sync(job_id: int) -> dict[str, Any]:
    return GmailSyncJobManager().process_sync_job(job_id)


def sync_all_users() -> dict[str, Any]:
    """Queue an incremental sync for every connected account (one per user at most)."""
    with session_scope() as session:
        users = list(session.scalars(select(GmailAccount.user_id).where(GmailAccount.connected.is_(True))))
    manager = GmailSyncJobManager()
    job_ids = {user: manager.queue_sync_job(user, "incremental") for user in users}
    return {"queued": len(job_ids), "jobs": job_ids}


email_queue.register_task("process_gmail_sync", process_gmail_sync, max_retries=3)
email_queue.register_task("sync_all_users", sync_all_users, max_retries=0)
