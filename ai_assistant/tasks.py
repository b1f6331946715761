"""Tasks of the ai queue. Importing this module registers them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ai_assistant import (
    engine,
    retention,  # noqa: F401  (registers the nightly prune of processed AI rows, email_threads)
    thread_jobs,  # noqa: F401  (registers process_thread_ai, process_unprocessed_threads)
)
from core.api.queues import ai_queue
from core.platform.db import session_scope
from email_automation.models import EmailMessage

# AI calls: the seeds' 30 s / 60 s / 120 s back-off, with full jitter, so requests that failed together in
# a provider outage do not all come back at once. A 429 with Retry-After defers instead (core.platform.http).
AI_RETRY = {"retry_backoff": (30, 120), "retry_jitter": "full"}


@ai_queue.task(max_retries=2, **AI_RETRY)
def process_ai_request(prompt: str, user_id: str | None = None) -> dict[str, Any]:
    """Answer a prompt with the configured provider or the local engine."""
    return {"user_id": user_id, **engine.answer(prompt)}


@ai_queue.task(max_retries=2, **AI_RETRY)
async def process_ai_request_aio(prompt: str, user_id: str | None = None) -> dict[str, Any]:
    """:func:`process_ai_request` as an ``async def``: on the ``async`` worker, hundreds of prompts
    wait on the provider at once on one event loop (it runs in every other worker class too)."""
    return {"user_id": user_id, **await engine.aanswer(prompt)}


@ai_queue.task(max_retries=2, dont_retry_on=(LookupError,), **AI_RETRY)  # a deleted message stays deleted
def classify_email(message_id: int) -> dict[str, Any]:
    """Classify one stored message and save the category on its row."""
    with session_scope() as session:
        message = session.get(EmailMessage, int(message_id))
        if message is None:
            raise LookupError(f"email message {message_id} does not exist")
        text = f"{message.subject}\n{message.snippet}"
    verdict = engine.classify(text)
    with session_scope() as session:
        message = session.get(EmailMessage, int(message_id))
        message.classification, message.classified_by = verdict["category"], verdict["engine"]
    return {"message_id": int(message_id), **verdict}


@ai_queue.task(max_retries=0)
def process_unclassified(limit: int = 50) -> dict[str, Any]:
    """Queue classify_email for up to ``limit`` unclassified messages (one job per message id)."""
    with session_scope() as session:
        ids = list(session.scalars(select(EmailMessage.id).where(EmailMessage.classification.is_(None))
                                   .order_by(EmailMessage.id).limit(int(limit))))
    for message_id in ids:
        ai_queue.enqueue_job("classify_email", {"message_id": message_id}, job_id=f"classify-{message_id}")
    return {"queued": len(ids), "limit": int(limit)}
