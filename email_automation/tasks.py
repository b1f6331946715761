"""Tasks of the email queue. Importing this module registers them."""

from __future__ import annotations

from core.api.queues import email_queue
from email_automation import (
    digests,  # noqa: F401  (registers send_user_digest, send_user_digests)
    gmail_sync_jobs,  # noqa: F401  (registers process_gmail_sync, sync_all_users)
    retention,  # noqa: F401  (registers the nightly prune of gmail_sync_jobs and sent_emails)
)
from email_automation.email_sender import send_email

# A transport, not a notification of its own: an SMTP hiccup (an OSError) is retried with the jittered
# back-off, and a retried job never sends twice. A bad address (ValueError) will not get better: not retried.
email_queue.register_task("send_email", send_email, max_retries=3, dont_retry_on=(ValueError,))
