"""Tasks of the ai queue. Importing this module registers them."""

from __future__ import annotations

from typing import Any

from core.redis_queues import ai_queue


@ai_queue.task(max_retries=2)
def process_ai_request(prompt: str, user_id: str | None = None) -> dict[str, Any]:
    """Answer a prompt (thin for now: a deterministic local answer)."""
    return {"engine": "local", "user_id": user_id, "answer": f"received {len(prompt)} characters"}


@ai_queue.task(max_retries=0)
def process_unclassified(limit: int = 50) -> dict[str, Any]:
    """Classify up to ``limit`` unclassified messages (thin until the domain work lands)."""
    return {"classified": 0, "limit": limit}
