"""Sending email: SMTP through the standard library, or the outbox table when SMTP is not set.

Idempotent per job: the first attempt records a ``sent_emails`` row keyed by the queue job id
right after the SMTP server accepted the message, so a retried job (or a re-run after a crash
later in the task) finds it and does not send again. Without SMTP (``SMTP_HOST`` empty) the
message is written to the same table with transport ``outbox`` — the demo works offline.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
from email.message import EmailMessage as MimeMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.config import get_settings
from core.execution.progress import current_job_id
from core.platform.db import session_scope
from email_automation.models import SentEmail

logger = logging.getLogger(__name__)


def _job_key(to: str, subject: str, body: str) -> str:
    job_id = current_job_id()
    if job_id:
        return f"job:{job_id}"
    digest = hashlib.sha256(f"{to}\0{subject}\0{body}".encode()).hexdigest()[:32]
    return f"direct:{digest}"


def _smtp_send(to: str, subject: str, body: str) -> None:
    settings = get_settings()
    message = MimeMessage()
    message["From"], message["To"], message["Subject"] = settings.smtp_from, to, subject
    message.set_content(body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.http_timeout) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)


def send_email(to: str, subject: str, body: str) -> dict[str, Any]:
    """Send one email (the ``send_email`` task); a second run of the same job sends nothing."""
    if not isinstance(to, str) or "@" not in to:
        raise ValueError(f"'to' must be an email address, got {str(to)[:80]!r}")
    key = _job_key(to, subject, body)
    with session_scope() as session:
        done = session.scalar(select(SentEmail).where(SentEmail.job_key == key))
        if done is not None:
            logger.info("send_email %s: already %s, not sending again", key, done.status)
            return {"status": "already_" + done.status, "to": to, "transport": done.transport, "id": done.id}
    transport = "smtp" if get_settings().smtp_host else "outbox"
    if transport == "smtp":
        _smtp_send(to, subject, body)
    try:
        with session_scope() as session:
            row = SentEmail(job_key=key, to=to, subject=subject, body=body, transport=transport,
                            status="sent" if transport == "smtp" else "outbox")
            session.add(row)
            session.flush()
            row_id = row.id
    except IntegrityError:
        return {"status": "already_sent", "to": to, "transport": transport}
    note = "delivered over SMTP" if transport == "smtp" else "no SMTP configured: written to the outbox table"
    return {"status": "sent" if transport == "smtp" else "outbox", "to": to, "transport": transport, "id": row_id,
            "note": note}
