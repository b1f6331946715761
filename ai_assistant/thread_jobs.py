"""AI jobs per email thread: summary, sentiment, reply draft and task extraction, stored on the
thread's ``email_threads`` row; and the bulk run that queues one job per unprocessed thread.

A thread is the user's stored messages sharing a Gmail thread id. A message whose
``ai_processed_at`` is NULL (new since the last run) marks its thread as unprocessed; a run with
every task sets it on the messages it covered. Running a thread that has nothing new is a no-op
unless ``force``, so a duplicate job (two bulk runs before the workers caught up) costs a query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ai_assistant import engine
from core.api.queues import ai_queue
from core.errors import PermanentJobError
from core.platform.db import session_scope
from email_automation.models import EmailMessage, EmailThread

logger = logging.getLogger(__name__)

FIELDS = {"summarize": "summary", "sentiment": "sentiment", "reply": "reply_draft", "tasks": "tasks_json"}


class ThreadNotFoundError(PermanentJobError):
    """The thread has no stored messages (for that user)."""


def check_tasks(tasks: list[str] | None) -> list[str]:
    """The AI tasks to run: all of ``engine.THREAD_TASKS`` by default; raises ValueError on an unknown one."""
    if tasks is None:
        return list(engine.THREAD_TASKS)
    if isinstance(tasks, str) or not isinstance(tasks, list) or not tasks:
        raise ValueError(f"tasks must be a non-empty list, got {tasks!r}")
    unknown = [t for t in tasks if t not in engine.THREAD_TASKS]
    if unknown:
        raise ValueError(f"unknown AI thread task {unknown[0]!r}; accepted: {', '.join(engine.THREAD_TASKS)}")
    return list(dict.fromkeys(tasks))


def _load_thread(user_id: str, thread_id: str) -> tuple[list[dict[str, str]], list[int], bool]:
    """The thread's messages oldest first, their row ids, and whether any is unprocessed."""
    with session_scope() as session:
        rows = session.scalars(select(EmailMessage).where(EmailMessage.user_id == user_id,
                                                          EmailMessage.thread_id == thread_id)
                               .order_by(EmailMessage.internal_date, EmailMessage.id)).all()
        messages = [{"sender": r.sender, "subject": r.subject, "body": r.snippet} for r in rows]
        return messages, [r.id for r in rows], any(r.ai_processed_at is None for r in rows)


def _store(user_id: str, thread_id: str, values: dict[str, Any]) -> int:
    """Insert or update the thread's row with ``values``; returns its id."""
    for _attempt in range(2):
        try:
            with session_scope() as session:
                row = session.scalar(select(EmailThread).where(EmailThread.user_id == user_id,
                                                               EmailThread.thread_id == thread_id))
                if row is None:
                    row = EmailThread(user_id=user_id, thread_id=thread_id)
                    session.add(row)
                for key, value in values.items():
                    setattr(row, key, value)
                session.flush()
                return row.id
        except IntegrityError:  # a concurrent job inserted the row first: update it next time round
            continue
    raise PermanentJobError(f"could not store AI results of thread {thread_id!r}")


def _mark_processed(message_ids: list[int], at: float) -> None:
    with session_scope() as session:
        session.execute(update(EmailMessage).where(EmailMessage.id.in_(message_ids)).values(ai_processed_at=at))


# A thread's AI pass (its reply draft above all) is worth little once the user has moved on: not
# started within an hour (a backlog, an LLM outage), it ends "expired" without spending tokens.
# An hour rides out a worker restart or a short provider outage; the messages stay unprocessed, so
# the next bulk run (every AI_PROCESSING_INTERVAL_MINUTES) queues the thread again with what is new.
DRAFT_EXPIRES = 3600


# group: one user's bulk run (thousands of threads) takes turns with every other user's clicks (core.queue.groups)
@ai_queue.task(max_retries=2, expires=DRAFT_EXPIRES, retry_backoff=(30, 120), retry_jitter="full",  # as AI_RETRY
               group="{user_id}")
def process_thread_ai(user_id: str, thread_id: str, tasks: list[str] | None = None,
                      force: bool = False) -> dict[str, Any]:
    """Run the AI tasks on one thread and store each result on its ``email_threads`` row."""
    try:
        wanted = check_tasks(tasks)
    except ValueError as exc:
        raise PermanentJobError(str(exc)) from exc
    user, thread = str(user_id), str(thread_id)
    messages, message_ids, unprocessed = _load_thread(user, thread)
    if not messages:
        raise ThreadNotFoundError(f"thread {thread!r} of user {user!r} has no stored messages")
    if not unprocessed and not force:
        return {"user_id": user, "thread_id": thread, "status": "skipped", "reason": "no new messages"}
    results: dict[str, Any] = {}
    engine_name = "local"
    for task in wanted:
        answer = engine.analyze_thread(task, messages)
        results[task], engine_name = answer[task], answer["engine"]
    now = time.time()
    values: dict[str, Any] = {FIELDS[t]: json.dumps(v) if t == "tasks" else v for t, v in results.items()}
    values.update(subject=messages[0]["subject"], message_count=len(messages), ai_engine=engine_name,
                  ai_processed_at=now)
    row_id = _store(user, thread, values)
    if set(wanted) == set(engine.THREAD_TASKS):
        _mark_processed(message_ids, now)
    return {"user_id": user, "thread_id": thread, "thread_row_id": row_id, "status": "processed",
            "engine": engine_name, "messages": len(messages), **{FIELDS[t]: v for t, v in results.items()}}


def thread_job_id(user_id: str, thread_id: str) -> str:
    """A stable job id per thread (``ai-thread-<hash>``): queueing a thread that is already queued is a no-op."""
    digest = hashlib.sha256(f"{user_id}\0{thread_id}".encode()).hexdigest()[:24]
    return f"ai-thread-{digest}"


def users_of_thread(thread_id: str) -> list[str]:
    """The users who have messages in a thread with this Gmail id (normally one)."""
    with session_scope() as session:
        return list(session.scalars(select(EmailMessage.user_id).where(EmailMessage.thread_id == thread_id)
                                    .distinct().order_by(EmailMessage.user_id)))


def queue_thread_ai(thread_id: str, user_id: str | None = None, tasks: list[str] | None = None,
                    force: bool = False) -> str:
    """Queue ``process_thread_ai`` for one thread; ``user_id`` may be omitted when one user has it."""
    wanted = check_tasks(tasks)
    users = [str(user_id)] if user_id is not None else users_of_thread(thread_id)
    if not users:
        raise LookupError(f"no stored messages in thread {thread_id!r}")
    if len(users) > 1:
        raise ValueError(f"thread {thread_id!r} exists for several users ({', '.join(users[:5])}); name one")
    payload = {"user_id": users[0], "thread_id": thread_id, "tasks": wanted, "force": bool(force)}
    return ai_queue.enqueue_job("process_thread_ai", payload, job_id=thread_job_id(users[0], thread_id),
                                user_id=users[0])


def unprocessed_threads(user_id: str | None = None, limit: int = 50) -> list[tuple[str, str]]:
    """``(user_id, thread_id)`` of threads with a message not yet covered, oldest first."""
    query = (select(EmailMessage.user_id, EmailMessage.thread_id)
             .where(EmailMessage.ai_processed_at.is_(None), EmailMessage.thread_id != "")
             .group_by(EmailMessage.user_id, EmailMessage.thread_id)
             .order_by(func.min(EmailMessage.id)).limit(int(limit)))
    if user_id is not None:
        query = query.where(EmailMessage.user_id == str(user_id))
    with session_scope() as session:
        return [(u, t) for u, t in session.execute(query)]


@ai_queue.task(max_retries=0)
def process_unprocessed_threads(user_id: str | None = None, limit: int = 50,
                                tasks: list[str] | None = None) -> dict[str, Any]:
    """The bulk run: one ``process_thread_ai`` job per unprocessed thread (at most ``limit``),
    queued with ``enqueue_many`` once per user so each user's jobs are in their index."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise PermanentJobError(f"limit must be a whole number from 1 to 10000, got {limit!r}")
    try:
        wanted = check_tasks(tasks)
    except ValueError as exc:
        raise PermanentJobError(str(exc)) from exc
    by_user: dict[str, list[dict[str, Any]]] = {}
    for user, thread in unprocessed_threads(user_id, limit):
        by_user.setdefault(user, []).append({"user_id": user, "thread_id": thread, "tasks": wanted})
    job_ids = [job_id for user, payloads in by_user.items()
               for job_id in ai_queue.enqueue_many("process_thread_ai", payloads, user_id=user)]
    logger.info("AI bulk run: %d thread job(s) for %d user(s)", len(job_ids), len(by_user))
    return {"queued": len(job_ids), "users": len(by_user), "limit": limit, "job_ids": job_ids}
