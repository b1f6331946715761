"""What the AI domain keeps (FIKIRI_DOMAIN_RETENTION_DAYS, core/ops/retention.py): a thread's AI
results (``email_threads``: summary, sentiment, reply draft, tasks) last processed before the
cutoff are pruned nightly, in batches. A thread that gets a new message is processed again and
its row written anew (thread_jobs.process_thread_ai upserts it)."""

from __future__ import annotations

from core.ops.retention import register_pruner
from core.platform.db import delete_in_batches
from email_automation.models import EmailThread


def prune_processed_threads(cutoff: float, batch_size: int = 500) -> tuple[int, int]:
    """Delete AI rows processed before ``cutoff`` (epoch s); (rows, batches)."""
    return delete_in_batches(EmailThread, EmailThread.ai_processed_at.is_not(None)
                             & (EmailThread.ai_processed_at < cutoff), batch_size)


register_pruner("email_threads", prune_processed_threads)
