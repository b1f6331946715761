"""What the email domain keeps (FIKIRI_DOMAIN_RETENTION_DAYS, core/ops/retention.py): finished
Gmail sync runs and sent mail older than the cutoff are pruned nightly, in batches.

* ``gmail_sync_jobs``: rows ``completed`` or ``failed`` whose run ended (``completed_at``, else
  ``created_at``) before the cutoff; pending and running rows are never touched.
* ``sent_emails``: the send records (``sent`` over SMTP, or ``outbox``) created before the cutoff.
  They exist so a retried send job does not mail twice; a job is never retried 90 days on.
"""

from __future__ import annotations

from sqlalchemy import func

from core.ops.retention import register_pruner
from core.platform.db import delete_in_batches
from email_automation.models import SentEmail, SyncJob

FINISHED_SYNC_STATUSES = ("completed", "failed")
SENT_STATUSES = ("sent", "outbox")


def prune_finished_syncs(cutoff: float, batch_size: int = 500) -> tuple[int, int]:
    """Delete finished sync rows that ended before ``cutoff`` (epoch s); (rows, batches)."""
    ended = func.coalesce(SyncJob.completed_at, SyncJob.created_at)
    return delete_in_batches(SyncJob, SyncJob.status.in_(FINISHED_SYNC_STATUSES) & (ended < cutoff), batch_size)


def prune_sent_emails(cutoff: float, batch_size: int = 500) -> tuple[int, int]:
    """Delete send records created before ``cutoff`` (epoch s); (rows, batches)."""
    return delete_in_batches(SentEmail, SentEmail.status.in_(SENT_STATUSES) & (SentEmail.created_at < cutoff),
                             batch_size)


register_pruner("gmail_sync_jobs", prune_finished_syncs)
register_pruner("sent_emails", prune_sent_emails)
