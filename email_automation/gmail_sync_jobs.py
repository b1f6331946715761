"""Gmail sync job manager (thin for now; the domain work replaces the internals, not the API).

``GmailSyncJobManager().queue_sync_job(user_id, sync_type)`` returns the id of the queued job,
readable at ``GET /api/jobs/<id>``.
"""

from __future__ import annotations

from typing import Any

from core.redis_queues import email_queue

SYNC_TYPES = ("manual", "incremental", "full")


class GmailSyncJobManager:
    def queue_sync_job(self, user_id: str | int, sync_type: str = "manual") -> str:
        if sync_type not in SYNC_TYPES:
            raise ValueError(f"unknown sync_type {sync_type!r}; accepted: {', '.join(SYNC_TYPES)}")
        return email_queue.enqueue_job(
            "process_gmail_sync", {"user_id": str(user_id), "sync_type": sync_type}, user_id=user_id
        )

    def process_sync_job(self, user_id: str, sync_type: str = "manual") -> dict[str, Any]:
        return {"user_id": user_id, "sync_type": sync_type, "messages_synced": 0}


def process_gmail_sync(user_id: str, sync_type: str = "manual") -> dict[str, Any]:
    return GmailSyncJobManager().process_sync_job(user_id, sync_type)


email_queue.register_task("process_gmail_sync", process_gmail_sync, max_retries=3)
