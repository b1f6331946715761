"""Each user's daily digest by email: new mail, what the AI jobs found in their threads, open
tasks, and their Gmail syncs over the last 24 hours.

``send_user_digests`` (periodic, ``JOBS_USER_DIGEST_CRON``) queues one ``send_user_digest`` job per
connected account under the id ``user-digest-<UTC day>-<hash of the user>``. The mail is sent from
inside that job through :func:`email_automation.email_sender.send_email`, which records it by job
id, so a second run for the same user and day (a retry, a manual re-run) never mails twice. A user
with nothing new in the window gets no mail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from core.api.queues import email_queue
from core.errors import PermanentJobError
from core.platform.db import session_scope
from email_automation.email_sender import send_email
from email_automation.models import EmailMessage, EmailThread, GmailAccount, SyncJob

logger = logging.getLogger(__name__)

WINDOW = 86_400  # seconds covered by a daily digest
SENTIMENT_ORDER = {"negative": 0, "neutral": 1, "positive": 2}


def digest_job_id(user_id: str, day: str) -> str:
    return f"user-digest-{day}-{hashlib.sha256(str(user_id).encode()).hexdigest()[:16]}"


def _activity(user: str, since: float) -> dict[str, Any]:
    with session_scope() as session:
        new = session.scalars(select(EmailMessage.subject).where(EmailMessage.user_id == user,
                                                                 EmailMessage.internal_date >= since)
                              .order_by(EmailMessage.internal_date.desc())).all()
        threads = session.scalars(select(EmailThread).where(EmailThread.user_id == user,
                                                            EmailThread.ai_processed_at >= since)).all()
        syncs = dict(session.execute(select(SyncJob.status, func.count()).where(SyncJob.user_id == user,
                                                                                SyncJob.created_at >= since)
                                     .group_by(SyncJob.status)).all())
        analysed = sorted(({"subject": t.subject, "sentiment": t.sentiment or "neutral", "summary": t.summary or "",
                            "tasks": json.loads(t.tasks_json or "[]")} for t in threads),
                          key=lambda t: SENTIMENT_ORDER.get(t["sentiment"], 1))
    return {"new_messages": len(new), "subjects": list(new[:5]), "threads": analysed, "syncs": syncs}


def render(activity: dict[str, Any]) -> str:
    """The digest's plain-text body."""
    lines = [f"New messages in the last 24 hours: {activity['new_messages']}"]
    lines += [f"  - {subject}" for subject in activity["subjects"]]
    if activity["threads"]:
        lines += ["", "Conversations analysed (needing attention first):"]
        lines += [f"  [{t['sentiment']}] {t['subject']}: {t['summary']}" for t in activity["threads"]]
    tasks = [task for t in activity["threads"] for task in t["tasks"]]
    if tasks:
        lines += ["", "Tasks found in your mail:"] + [f"  [ ] {task}" for task in tasks]
    if activity["syncs"]:
        lines += ["", "Gmail syncs: " + ", ".join(f"{n} {status}" for status, n in sorted(activity["syncs"].items()))]
    return "\n".join(lines)


def send_user_digest(user_id: str, day: str | None = None) -> dict[str, Any]:
    """Mail one user their digest of the last 24 hours (skipped when nothing is new)."""
    user = str(user_id)
    with session_scope() as session:
        to = session.scalar(select(GmailAccount.email).where(GmailAccount.user_id == user,
                                                             GmailAccount.connected.is_(True)))
    if not to:
        raise PermanentJobError(f"user {user!r} has no connected account to mail the digest to")
    activity = _activity(user, time.time() - WINDOW)
    if not activity["new_messages"] and not activity["threads"]:
        return {"user_id": user, "status": "skipped", "reason": "nothing new in the last 24 hours"}
    day = day or datetime.now(UTC).strftime("%Y-%m-%d")
    sent = send_email(to, f"Your Fikiri digest for {day}", render(activity))
    return {"user_id": user, "to": to, "status": sent["status"], "new_messages": activity["new_messages"],
            "threads": len(activity["threads"])}


def send_user_digests() -> dict[str, Any]:
    """The periodic fan-out: one ``send_user_digest`` job per connected account, one per user per day."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    with session_scope() as session:
        users = list(session.scalars(select(GmailAccount.user_id).where(GmailAccount.connected.is_(True))
                                     .order_by(GmailAccount.user_id)))
    jobs = {user: email_queue.enqueue_job("send_user_digest", {"user_id": user, "day": day},
                                          job_id=digest_job_id(user, day), user_id=user) for user in users}
    logger.info("queued %d user digest(s) for %s", len(jobs), day)
    return {"day": day, "queued": len(jobs), "jobs": jobs}


# A user notification: not retried (the seeds' rule, "fail fast"); tomorrow's digest covers the day.
# group: the morning fan-out takes turns per user with everyone's syncs (core.queue.groups)
email_queue.register_task("send_user_digest", send_user_digest, max_retries=0, group="{user_id}")
email_queue.register_task("send_user_digests", send_user_digests, max_retries=0)
