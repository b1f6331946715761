"""Tables of the email domain: connected Gmail accounts, sync runs, synced messages, sent mail."""

from __future__ import annotations

import time

from sqlalchemy import Engine, Float, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, mapped_column

from core.platform.db import Base, add_column_if_missing, register_schema_upgrade


class GmailAccount(Base):
    __tablename__ = "gmail_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(320))
    access_token: Mapped[str] = mapped_column(Text, default="")
    refresh_token: Mapped[str] = mapped_column(Text, default="")
    history_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    connected: Mapped[bool] = mapped_column(default=True)


ACTIVE_SYNC_STATUSES = ("pending", "running")
_ACTIVE_SYNC = text("status IN ('pending', 'running')")


class SyncJob(Base):
    """One Gmail sync run. Its queue job id is ``gmail-sync-<id>-<random>`` (stored in
    ``queue_job_id``), so ids never repeat when row ids restart. The partial unique index
    allows at most one pending or running sync per user, enforced by the database."""

    __tablename__ = "gmail_sync_jobs"
    __table_args__ = (Index("uq_gmail_sync_one_active_per_user", "user_id", unique=True,
                            sqlite_where=_ACTIVE_SYNC, postgresql_where=_ACTIVE_SYNC),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    sync_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    messages_synced: Mapped[int] = mapped_column(Integer, default=0)
    messages_new: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    queue_job_id: Mapped[str | None] = mapped_column(String(160), unique=True, nullable=True)


class EmailMessage(Base):
    __tablename__ = "email_messages"
    __table_args__ = (UniqueConstraint("user_id", "gmail_id", name="uq_email_messages_user_gmail"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    gmail_id: Mapped[str] = mapped_column(String(128))
    thread_id: Mapped[str] = mapped_column(String(128), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    sender: Mapped[str] = mapped_column(Text, default="")
    snippet: Mapped[str] = mapped_column(Text, default="")
    internal_date: Mapped[float | None] = mapped_column(Float, nullable=True)
    classification: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    classified_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the AI thread job last covered this message; NULL marks its thread as unprocessed.
    # Added to existing databases by ai_assistant.thread_jobs.ensure_ai_schema.
    ai_processed_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class EmailThread(Base):
    """A conversation's AI results, one row per (user, Gmail thread id): what the per-thread AI
    job (summarize, sentiment, reply draft, task extraction) stores."""

    __tablename__ = "email_threads"
    __table_args__ = (UniqueConstraint("user_id", "thread_id", name="uq_email_threads_user_thread"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    thread_id: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(Text, default="")
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    sentiment: Mapped[str | None] = mapped_column(String(16), nullable=True)  # positive | neutral | negative
    reply_draft: Mapped[str | None] = mapped_column(Text, nullable=True)
    tasks_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of extracted tasks
    ai_engine: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ai_processed_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class SentEmail(Base):
    """One row per send job: a retried job finds it and does not send twice."""

    __tablename__ = "sent_emails"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_key: Mapped[str] = mapped_column(String(160), unique=True)
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(16))  # smtp | outbox
    status: Mapped[str] = mapped_column(String(16))  # sent | outbox
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


@register_schema_upgrade
def add_ai_processed_at(engine: Engine) -> None:
    """Databases made before the AI thread jobs lack ``email_messages.ai_processed_at`` (and its index)."""
    add_column_if_missing(engine, EmailMessage.__tablename__, "ai_processed_at", "FLOAT")
    for index in EmailMessage.__table__.indexes:
        if "ai_processed_at" in index.columns:
            try:
                index.create(engine, checkfirst=True)
            except DBAPIError:  # a concurrent process created it between the check and CREATE
                pass
