"""The /api/jobs blueprint: job status polling, queue stats, a user's recent jobs, actions.

Every answer is the JSON envelope of routes.common. Users see only their own jobs (another
user's job answers 404, so ids do not leak); queue-wide views and retries are admin-only.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from core.auth import ForbiddenError
from core.connection import redis_available
from core.errors import InvalidPayloadError, JobNotFoundError, JobsError
from core.fallback import get_fallback
from core.job_model import Job
from core.redis_queues import (
    all_queues,
    cancel_job,
    get_job,
    get_queue,
    get_user_jobs,
    process_ai_request_async,
    retry_job,
    validate_job_id,
)
from routes.common import current_identity, install_error_handlers, ok, require_admin, require_identity
from routes.openapi import openapi_document

logger = logging.getLogger(__name__)

jobs_bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")
install_error_handlers(jobs_bp)

LIMIT_DEFAULT = 20
LIMIT_MAX = 100
PROMPT_MAX_CHARS = 8000


class UnsupportedMediaTypeError(JobsError):
    code = "unsupported_media_type"
    http_status = 415


def limit_arg(default: int = LIMIT_DEFAULT, maximum: int = LIMIT_MAX) -> int:
    """``?limit=`` as a whole number from 1 to ``maximum``; anything else is a 400 saying so."""
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.strip().isdigit() or not 1 <= int(raw) <= maximum:
        raise InvalidPayloadError(f"limit must be a whole number from 1 to {maximum}, got {raw[:40]!r}")
    return int(raw)


def json_body() -> dict[str, Any]:
    """The request's JSON object body ({} when empty); 415/400 for anything else."""
    if not request.get_data(cache=True):
        return {}
    if not request.is_json:
        raise UnsupportedMediaTypeError(
            f"send the body as JSON with Content-Type: application/json, got {request.content_type or 'none'!r}"
        )
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidPayloadError("the body is not a JSON object (malformed JSON, or another JSON type); send e.g. {\"prompt\": \"...\"}")
    return body


def visible_job(job_id: str) -> Job:
    """The job if the caller may see it; otherwise the same 404 as for a job that does not exist."""
    validate_job_id(job_id)
    job = get_job(job_id)
    if job is None or not current_identity().can_see(job.user_id):
        raise JobNotFoundError(f"Job {job_id} does not exist")
    return job


def _target_user(body: dict[str, Any]) -> str:
    """The user a trigger runs for: the caller, or for the admin the body's user_id."""
    identity = current_identity()
    if not identity.is_admin:
        return identity.user_id or ""
    user_id = body.get("user_id")
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or str(user_id) == "":
        raise InvalidPayloadError("the admin token must name the user: add \"user_id\" to the body")
    return str(user_id)


@jobs_bp.get("/<job_id>")
@require_identity
def job_status(job_id: str):
    return ok(visible_job(job_id).to_dict())


@jobs_bp.post("/<job_id>/cancel")
@require_identity
def cancel(job_id: str):
    visible_job(job_id)
    return ok(cancel_job(job_id).to_dict())


@jobs_bp.post("/<job_id>/retry")
@require_admin
def retry(job_id: str):
    visible_job(job_id)
    return ok(retry_job(job_id).to_dict())


@jobs_bp.get("/queue/<queue_name>/stats")
@require_admin
def queue_stats(queue_name: str):
    queue = get_queue(queue_name)
    return ok({"queue": queue.short_name, "stats": queue.get_stats()})


@jobs_bp.get("/queues/stats")
@require_admin
def all_queue_stats():
    return ok([{"queue": q.short_name, "stats": q.get_stats()} for q in all_queues()])


@jobs_bp.get("/queue/<queue_name>/failed")
@require_admin
def failed_jobs(queue_name: str):
    queue = get_queue(queue_name)
    jobs = queue.get_failed_jobs(limit_arg())
    return ok({"queue": queue.short_name, "jobs": [j.to_dict() for j in jobs]})


@jobs_bp.get("/user/<user_id>/recent")
@require_identity
def user_recent(user_id: str):
    identity = current_identity()
    if not identity.is_admin and identity.user_id != user_id:
        raise ForbiddenError("a user token may list only its own jobs")
    jobs = get_user_jobs(user_id, limit_arg())
    return ok({"user_id": user_id, "jobs": [j.to_dict() for j in jobs]})


@jobs_bp.post("/sync/trigger")
@require_identity
def trigger_sync():
    from email_automation.gmail_sync_jobs import SYNC_TYPES, GmailSyncJobManager

    body = json_body()
    sync_type = body.get("sync_type", "manual")
    if sync_type not in SYNC_TYPES:
        raise InvalidPayloadError(f"unknown sync_type {str(sync_type)[:40]!r}; accepted: {', '.join(SYNC_TYPES)}")
    job_id = GmailSyncJobManager().queue_sync_job(_target_user(body), sync_type=sync_type)
    return ok({"job_id": job_id}, 202)


@jobs_bp.post("/ai/trigger")
@require_identity
def trigger_ai():
    body = json_body()
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidPayloadError("\"prompt\" must be a non-empty string")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise InvalidPayloadError(f"\"prompt\" is {len(prompt)} characters; at most {PROMPT_MAX_CHARS} are accepted")
    job_id = process_ai_request_async(prompt, user_id=_target_user(body))
    return ok({"job_id": job_id}, 202)


@jobs_bp.get("/health")
def health():
    """Public liveness (Redis reachable, mode); the admin token adds workers per queue."""
    reachable = redis_available()
    data: dict[str, Any] = {
        "status": "ok" if reachable else "degraded",
        "redis": reachable,
        "mode": "redis" if reachable else "fallback",
    }
    token_given = "Authorization" in request.headers
    if token_given and current_identity().is_admin:
        data["fallback_pending"] = get_fallback().pending_count()
        if reachable:
            data["workers"] = {q.short_name: q.get_stats()["workers"] for q in all_queues()}
    return ok(data)


@jobs_bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document itself (not wrapped: tools read it as it is), of what is mounted."""
    extension = current_app.extensions.get("fikiri_jobs")
    return jsonify(extension.openapi_document() if extension else openapi_document())
