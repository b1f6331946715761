"""Gmail sync job manager: queue a sync for a user, and the task that runs it.

``queue_sync_job`` writes a ``gmail_sync_jobs`` row and enqueues ``process_gmail_sync`` under the
queue job id ``gmail-sync-<row id>-<random>``: the random part keeps ids unique when a database is
restored or a new environment shares a Redis, so one user's sync never folds into another's.

At most one sync per user is pending or running, and the database enforces it: a partial unique
index on ``user_id`` over active rows. Concurrent triggers race to insert; the losers get an
IntegrityError, read the winner's row and return its job id. A winner's row may be visible a
moment before its job reaches Redis, so an active row whose job is missing counts as stale only
after ``GMAIL_SYNC_STALE_AFTER`` seconds.

``process_sync_job`` lists the user's messages (full: ``newer_than:Nd``; incremental: Gmail's
history from the stored history id), fetches each message's metadata and upserts it, reporting
progress as it goes. Upserts make a re-run — after a crash or a retry — never duplicate. A sync
that cannot run (no connected account) raises, so its job ends ``failed`` with the error.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from sqlalchemy import and_, false, inspect, or_, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.config import get_settings
from core.errors import PermanentJobError
from core.execution.progress import current_job_id, report_progress
from core.platform.db import get_engine, session_scope
from email_automation.gmail_client import GmailClient, HistoryExpiredError
from email_automation.models import ACTIVE_SYNC_STATUSES, EmailMessage, GmailAccount, SyncJob

logger = logging.getLogger(__name__)

SYNC_TYPES = ("manual", "incremental", "full")
ACTIVE = ACTIVE_SYNC_STATUSES
INSERT_ATTEMPTS = 5
_schema_checked: set[str] = set()


class SyncError(PermanentJobError):
    """A sync cannot run (no connected account, unknown sync row...)."""


def ensure_sync_schema() -> None:
    """Bring an existing ``gmail_sync_jobs`` table up to date (the column and the partial unique
    index of this version); new databases get both from ``create_all``."""
    url = get_settings().database_url
    if url in _schema_checked:
        return
    with session_scope():  # creates the tables on first use
        pass
    engine = get_engine(url)
    columns = {c["name"] for c in inspect(engine).get_columns(SyncJob.__tablename__)}
    with engine.begin() as connection:
        if "queue_job_id" not in columns:
            connection.execute(text("ALTER TABLE gmail_sync_jobs ADD COLUMN queue_job_id VARCHAR(160)"))
            connection.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS uq_gmail_sync_queue_job_id "
                                    "ON gmail_sync_jobs (queue_job_id)"))
    for index in SyncJob.__table__.indexes:
        try:
            index.create(engine, checkfirst=True)
        except (OperationalError, ProgrammingError, IntegrityError) as exc:  # old duplicate active rows
            logger.error("could not create %s (resolve duplicate active syncs first): %s", index.name, exc)
    _schema_checked.add(url)


def connect_account(user_id: str | int, email: str, access_token: str, refresh_token: str) -> None:
    """Store (or update) a user's Gmail tokens: what the OAuth callback of the host app calls."""
    with session_scope() as session:
        account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == str(user_id)))
        if account is None:
            account = GmailAccount(user_id=str(user_id), email=email)
            session.add(account)
        account.email, account.access_token, account.refresh_token = email, access_token, refresh_token
        account.connected = True


def new_queue_job_id(row_id: int) -> str:
    """``gmail-sync-<row id>-<16 random hex>``: unique across databases sharing one Redis."""
    return f"gmail-sync-{row_id}-{secrets.token_hex(8)}"


class GmailSyncJobManager:
    def queue_sync_job(self, user_id: str | int, sync_type: str = "manual", *, full_sync: bool | None = None,
                       lookback_days: int | None = None) -> str:
        """Queue a sync for the user; returns the job id (the active one's if a sync is running).

        ``full_sync`` lists every message in the window instead of Gmail's history (default:
        every type but ``incremental``); ``lookback_days`` is that window (default
        ``EMAIL_SYNC_LOOKBACK_DAYS``, 90).
        """
        if sync_type not in SYNC_TYPES:
            raise ValueError(f"unknown sync_type {sync_type!r}; accepted: {', '.join(SYNC_TYPES)}")
        if lookback_days is not None and (isinstance(lookback_days, bool) or not isinstance(lookback_days, int)
                                          or lookback_days < 1):
            raise ValueError(f"lookback_days must be a whole number of at least 1, got {lookback_days!r}")
        ensure_sync_schema()
        user = str(user_id)
        for _attempt in range(INSERT_ATTEMPTS):
            active = self._active_job_id(user)
            if active is not None:
                return active
            try:
                row_id, queue_job_id = self._insert_row(user, sync_type)
            except IntegrityError:  # a concurrent trigger inserted the user's active row first
                continue
            break
        else:
            raise SyncError(f"could not queue a sync for user {user!r}: the active row kept changing")
        payload = {"job_id": row_id, "user_id": user,
                   "full_sync": sync_type != "incremental" if full_sync is None else bool(full_sync),
                   "lookback_days": lookback_days or get_settings().email_sync_lookback_days}
        try:
            email_queue.enqueue_job("process_gmail_sync", payload, job_id=queue_job_id, user_id=user, max_retries=3)
        except Exception as exc:
            self._finish_row(row_id, "failed", f"could not queue the sync: {type(exc).__name__}: {exc}")
            raise
        return queue_job_id

    @staticmethod
    def _insert_row(user: str, sync_type: str) -> tuple[int, str]:
        with session_scope() as session:
            row = SyncJob(user_id=user, sync_type=sync_type, status="pending")
            session.add(row)
            session.flush()  # the partial unique index refuses a second active row here or at commit
            row.queue_job_id = new_queue_job_id(row.id)
            return row.id, row.queue_job_id

    def _active_job_id(self, user: str) -> str | None:
        """The job id of the user's live active sync; a stale active row is closed on the way."""
        with session_scope() as session:
            row = session.scalar(select(SyncJob).where(SyncJob.user_id == user, SyncJob.status.in_(ACTIVE)))
            if row is None:
                return None
            if self._still_queued(row):
                return row.queue_job_id
            return None

    @staticmethod
    def _still_queued(row: SyncJob) -> bool:
        """An 'active' row whose job is gone (expired, fallback lost at restart) is not active;
        a young row whose job is not in Redis yet is (its trigger is between commit and enqueue)."""
        job = get_job(row.queue_job_id) if row.queue_job_id else None
        if job is None and time.time() - (row.created_at or 0) < get_settings().gmail_sync_stale_after:
            return True
        if job is None or job.status.is_final:
            row.status = "failed" if job is None or job.status.value != "completed" else "completed"
            row.error = row.error or "the queue job ended without updating this row"
            row.completed_at = row.completed_at or time.time()
            return False
        return True

    @staticmethod
    def _finish_row(row_id: int, status: str, error: str | None) -> None:
        with session_scope() as session:
            row = session.get(SyncJob, int(row_id))
            if row is not None:
                row.status, row.error, row.completed_at = status, error, time.time()

    def process_sync_job(self, job_id: int | str, user_id: str | None = None, full_sync: bool | None = None,
                         lookback_days: int | None = None) -> dict[str, Any]:
        """The ``process_gmail_sync`` task: run sync row ``job_id`` (of ``user_id``, when given).

        ``job_id`` is the row's id, or the queue job id :meth:`queue_sync_job` returned. A row runs
        once: a second job for the same row (the seeds' pattern enqueues one more after
        ``queue_sync_job`` already did) finds it running or ended and returns its state without
        syncing. Only the job that claimed the row runs it again (its own retries, or a rerun
        after its worker died), so a sync is never run by two jobs."""
        me = current_job_id()
        with session_scope() as session:
            row = self._row(session, job_id)
            if user_id is not None and row.user_id != str(user_id):
                raise SyncError(f"sync row {job_id} belongs to another user; this job was queued elsewhere")
            if not self._claim(session, row, me):
                session.refresh(row)
                logger.info("sync row %s is %s (job %s); job %s leaves it alone", row.id, row.status,
                            row.queue_job_id, me)
                return self._state(row, skipped=True)
            session.refresh(row)
            job_id = row.id
            account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == row.user_id))
            if account is None or not account.connected:
                row.status, row.error, row.completed_at = "failed", "no connected Gmail account", time.time()
                failure = f"user {row.user_id} has no connected Gmail account"
            else:
                failure = None
                user, sync_type = row.user_id, row.sync_type
                tokens = (account.access_token, account.refresh_token, account.history_id)
        if failure:
            raise SyncError(failure)
        full = sync_type != "incremental" if full_sync is None else bool(full_sync)
        days = lookback_days or get_settings().email_sync_lookback_days
        try:
            counts = self._sync(user, full, days, *tokens)
        except Exception as exc:
            self._finish_row(job_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        with session_scope() as session:
            row = session.get(SyncJob, int(job_id))
            row.status, row.completed_at, row.error = "completed", time.time(), None
            row.messages_synced, row.messages_new = counts["messages_synced"], counts["messages_new"]
        return {"sync_job_id": int(job_id), "user_id": user, "sync_type": sync_type, "lookback_days": days,
                **counts}

    @staticmethod
    def _row(session: Any, job_id: int | str) -> SyncJob:
        """The row by id, or by the queue job id ``queue_sync_job`` returned (``gmail-sync-<id>-<hex>``)."""
        if isinstance(job_id, str) and not (job_id.isascii() and job_id.isdigit()):
            row = session.scalar(select(SyncJob).where(SyncJob.queue_job_id == job_id))
        else:
            try:
                row_id = int(job_id)
            except (TypeError, ValueError):
                raise SyncError(f"job_id must be a sync row id or a queue job id, got {job_id!r}") from None
            row = session.get(SyncJob, row_id)
        if row is None:
            raise SyncError(f"sync row {job_id} does not exist in this database")
        return row

    @staticmethod
    def _claim(session: Any, row: SyncJob, me: str | None) -> bool:
        """Mark ``row`` running for job ``me`` if it may run it, in one conditional UPDATE (two jobs
        racing for a row cannot both win, in SQLite or PostgreSQL): a pending row is anyone's and
        becomes this job's; a running or failed one only its own job's (a retry, or a rerun after
        its worker died); a completed one nobody's."""
        mine = SyncJob.queue_job_id == me if me is not None else false()
        claimable = or_(SyncJob.status == "pending", and_(SyncJob.status.in_(("running", "failed")), mine))
        values: dict[str, Any] = {"status": "running", "started_at": time.time(), "error": None}
        if me is not None:
            values["queue_job_id"] = me
        done = session.execute(update(SyncJob).where(SyncJob.id == row.id, claimable).values(**values)
                               .execution_options(synchronize_session=False))
        return done.rowcount == 1

    @staticmethod
    def _state(row: SyncJob, skipped: bool = False) -> dict[str, Any]:
        return {"sync_job_id": row.id, "user_id": row.user_id, "sync_type": row.sync_type, "status": row.status,
                "queue_job_id": row.queue_job_id, "messages_synced": row.messages_synced,
                "messages_new": row.messages_new, "error": row.error, "skipped": skipped}

    def _sync(self, user: str, full: bool, lookback_days: int, access: str, refresh: str,
              history_id: str | None) -> dict[str, Any]:
        def save_token(token: str) -> None:
            with session_scope() as session:
                account = session.scalar(select(GmailAccount).where(GmailAccount.user_id == user))
                account.access_token = token

        client = GmailClient(access, refresh, on_token_refresh=save_token)
        new_history = None
        mode = "full"
        if not full and history_id:
            try:
                ids, new_history = client.history_message_ids(history_id)
                mode = "incremental"
            except HistoryExpiredError:
                ids = []
                mode = "full"
        if mode == "full":
            new_history = client.profile_history_id()
            ids = list(client.list_message_ids(f"newer_than:{lookback_days}d"))
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


def process_gmail_sync(job_id: int | str, user_id: str | None = None, full_sync: bool | None = None,
                       lookback_days: int | None = None) -> dict[str, Any]:
    return GmailSyncJobManager().process_sync_job(job_id, user_id, full_sync, lookback_days)


def sync_all_users(lookback_days: int | None = None) -> dict[str, Any]:
    """Queue an incremental sync for every connected account (one per user at most)."""
    with session_scope() as session:
        users = list(session.scalars(select(GmailAccount.user_id).where(GmailAccount.connected.is_(True))))
    manager = GmailSyncJobManager()
    job_ids = {user: manager.queue_sync_job(user, "incremental", lookback_days=lookback_days) for user in users}
    return {"queued": len(job_ids), "jobs": job_ids}


# One running sync per user, across every worker and host: a permit per user, released when the
# sync ends or its worker's lease runs out (core.flow.limits). The database keeps one active row per user.
# A failed sync waits 60, 120, then 240 s (the seeds' schedule: Gmail's own hiccups pass in minutes);
# a run retried after the row moved on finds it ended and skips.
# group: a backfill or sync_all_users takes turns per user on the email queue (core.queue.groups)
email_queue.register_task("process_gmail_sync", process_gmail_sync, max_retries=3, concurrency=1,
                          concurrency_key="gmail-sync:{user_id}", retry_delays=[60, 120, 240], group="{user_id}")
email_queue.register_task("sync_all_users", sync_all_users, max_retries=0)
