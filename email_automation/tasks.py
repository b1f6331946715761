"""Tasks of the email queue. Importing this module registers them."""

from __future__ import annotations

import logging
from typing import Any

from core.redis_queues import email_queue

logger = logging.getLogger(__name__)


@email_queue.task(max_retries=3)
def send_email(to: str, subject: str, body: str) -> dict[str, Any]:
    """Send one email (thin for now: records the message; SMTP arrives with the domain work)."""
    logger.info("send_email to=%s subject=%r", to, subject)
    return {"delivered": False, "to": to, "subject": subject, "transport": "log"}


from email_automation import gmail_sync_jobs  # noqa: E402,F401  (registers process_gmail_sync)


@email_queue.task(max_retries=0)
def sync_all_users() -> dict[str, Any]:
    """Queue a Gmail sync for every connected account (thin until the domain work lands)."""
    return {"queued": 0, "users": []}
