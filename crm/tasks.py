"""Tasks of the crm queue. Importing this module registers them."""

from __future__ import annotations

from typing import Any

from core.redis_queues import crm_queue


@crm_queue.task(max_retries=3)
def upsert_contact(external_id: str, email: str, name: str = "") -> dict[str, Any]:
    """Create or update a contact (thin for now: echoes what it would store)."""
    return {"external_id": external_id, "email": email, "name": name, "stored": False}
