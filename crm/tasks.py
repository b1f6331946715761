"""Tasks of the crm queue: contact and lead upserts, idempotent by external id, with an
optional outbound webhook (CRM_WEBHOOK_URL) for every change. Importing this module registers them."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import requests
from sqlalchemy import select

from core.api.queues import crm_queue
from core.config import get_settings
from core.platform.aio_http import arequest_with_backoff, async_client
from core.platform.db import session_scope
from core.platform.http import UpstreamError, request_with_backoff
from crm.models import Contact, Lead

logger = logging.getLogger(__name__)


def _notify(event: str, record: dict[str, Any]) -> bool:
    url = get_settings().crm_webhook_url
    if not url:
        return False
    response = request_with_backoff(requests.Session(), "POST", url, json={"event": event, "data": record})
    if response.status_code >= 400:
        raise UpstreamError(f"CRM webhook answered {response.status_code}", response.status_code)
    return True


async def _anotify(event: str, record: dict[str, Any]) -> bool:
    """:func:`_notify` awaited on the event loop."""
    url = get_settings().crm_webhook_url
    if not url:
        return False
    async with async_client() as client:
        response = await arequest_with_backoff(client, "POST", url, json={"event": event, "data": record})
    if response.status_code >= 400:
        raise UpstreamError(f"CRM webhook answered {response.status_code}", response.status_code)
    return True


def _upsert(model: type, external_id: str, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    if not isinstance(external_id, str) or not external_id:
        raise ValueError("external_id must be a non-empty string")
    with session_scope() as session:
        row = session.scalar(select(model).where(model.external_id == external_id))
        created = row is None
        if created:
            row = model(external_id=external_id)
            session.add(row)
        changed = created or any(getattr(row, k) != v for k, v in fields.items())
        for key, value in fields.items():
            setattr(row, key, value)
        if changed:
            row.updated_at = time.time()
        session.flush()
        record = {"id": row.id, "external_id": external_id, **fields}
    return record, changed


# group: one user's CRM import takes turns with other users' updates; a system update with no user_id runs
# ungrouped (core.queue.groups)
@crm_queue.task(max_retries=3, group="{user_id}")
def upsert_contact(external_id: str, email: str, name: str = "", company: str = "") -> dict[str, Any]:
    record, changed = _upsert(Contact, external_id, {"email": email, "name": name, "company": company})
    notified = _notify("contact.upserted", record) if changed else False
    return {**record, "changed": changed, "webhook": notified}


@crm_queue.task(max_retries=3, group="{user_id}")
def upsert_lead(external_id: str, email: str, name: str = "", status: str = "new", score: int = 0) -> dict[str, Any]:
    record, changed = _upsert(Lead, external_id, {"email": email, "name": name, "status": status, "score": int(score)})
    notified = _notify("lead.upserted", record) if changed else False
    return {**record, "changed": changed, "webhook": notified}


# async versions: the row is written in a thread (SQLAlchemy is sync), the webhook awaited on the loop
@crm_queue.task(max_retries=3)
async def upsert_contact_aio(external_id: str, email: str, name: str = "", company: str = "") -> dict[str, Any]:
    record, changed = await asyncio.to_thread(_upsert, Contact, external_id,
                                              {"email": email, "name": name, "company": company})
    notified = await _anotify("contact.upserted", record) if changed else False
    return {**record, "changed": changed, "webhook": notified}


@crm_queue.task(max_retries=3)
async def upsert_lead_aio(external_id: str, email: str, name: str = "", status: str = "new",
                          score: int = 0) -> dict[str, Any]:
    record, changed = await asyncio.to_thread(_upsert, Lead, external_id,
                                              {"email": email, "name": name, "status": status, "score": int(score)})
    notified = await _anotify("lead.upserted", record) if changed else False
    return {**record, "changed": changed, "webhook": notified}
