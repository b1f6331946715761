"""Admin endpoints for outbound webhooks (core/events/webhooks.py), mounted under the API prefix.

``GET/POST /webhooks``, ``GET/DELETE /webhooks/<id>``, ``GET /webhooks/<id>/attempts``. The
secret is in the answer to POST only; every change is in the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from core.events import webhooks
from core.ops import audit
from routes.common import install_error_handlers, ok, require_admin
from routes.params import ParamError, int_arg, json_body

logger = logging.getLogger(__name__)

webhooks_bp = Blueprint("jobs_webhooks", __name__, url_prefix="/api/jobs")
install_error_handlers(webhooks_bp)

BODY_FIELDS = ("url", "secret", "tasks", "users", "events")


def _registration(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise ParamError(f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown[:5])}; "
                         f"accepted: {', '.join(BODY_FIELDS)}")
    if body.get("url") is None:
        raise ParamError("missing field url: the http:// or https:// address to POST events to")
    return {name: body.get(name) for name in BODY_FIELDS}


@webhooks_bp.get("/webhooks")
@require_admin
def webhooks_list():
    return ok({"webhooks": webhooks.list_webhooks()})


@webhooks_bp.post("/webhooks")
@require_admin
def webhooks_add():
    """Register a webhook: 201 with its secret (shown only in this answer)."""
    hook = webhooks.register_webhook(**_registration(json_body()))
    audit.record("admin", "webhooks.add", hook["id"], "api", detail=hook["url"])
    return ok(hook, 201)


@webhooks_bp.get("/webhooks/<webhook_id>")
@require_admin
def webhooks_show(webhook_id: str):
    return ok(webhooks.get_webhook(webhook_id).public())


@webhooks_bp.delete("/webhooks/<webhook_id>")
@require_admin
def webhooks_remove(webhook_id: str):
    webhooks.remove_webhook(webhook_id)
    audit.record("admin", "webhooks.remove", webhook_id, "api")
    return ok({"id": webhook_id, "removed": True})


@webhooks_bp.get("/webhooks/<webhook_id>/attempts")
@require_admin
def webhooks_attempts(webhook_id: str):
    """Delivery attempts, newest first (``?limit=``, 1-500, default 50)."""
    attempts = webhooks.webhook_attempts(webhook_id, int_arg("limit", 50, 1, 500))
    return ok({"id": webhook_id, "attempts": attempts})
