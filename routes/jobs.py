"""The /api/jobs blueprint: job status polling, queue stats, a user's recent jobs, actions.

Every answer is the JSON envelope of routes.common. Users see only their own jobs (another
user's job answers 404, so ids do not leak); queue-wide views and retries are admin-only.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from core.api.jobs import cancel_job, get_job, get_user_jobs, retry_job, stop_job
from core.api.queues import all_queues, get_queue, process_ai_request_async
from core.errors import ForbiddenError, JobNotFoundError
from core.fallback.executor import get_fallback
from core.ops import audit
from core.platform.auth import Identity
from core.platform.connection import redis_available
from core.queue.job_model import Job
from core.queue.job_options import validate_job_id
from core.schedule.heartbeat import scheduler_status
from routes.common import current_identity, install_error_handlers, ok, require_admin, require_identity
from routes.openapi import openapi_document
from routes.params import (
    ParamError,
    UnsupportedMediaTypeError,
    body_bool,
    body_int,
    int_arg,
    json_body,
    parse_choice,
    user_id_value,
)
from routes.views import job_view

logger = logging.getLogger(__name__)

jobs_bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")
install_error_handlers(jobs_bp)

LIMIT_DEFAULT = 20
LIMIT_MAX = 100
AUDIT_LIMIT_MAX = 500
PROMPT_MAX_CHARS = 8000
LOOKBACK_DAYS_MAX = 3650
FAILED_PAGE_MAX = 100_000

__all__ = ["UnsupportedMediaTypeError", "jobs_bp", "json_body", "limit_arg", "visible_job", "actor"]


def limit_arg(default: int = LIMIT_DEFAULT, maximum: int = LIMIT_MAX) -> int:
    """``?limit=`` as a whole number from 1 to ``maximum``; anything else is a 400 saying so."""
    return int_arg("limit", default, 1, maximum)


def actor(identity: Identity) -> str:
    """How the audit log names a caller."""
    return "admin" if identity.is_admin else f"user:{identity.user_id}"


def visible_job(job_id: str) -> Job:
    """The job if the caller may see it; otherwise the same 404 as for a job that does not exist."""
    validate_job_id(job_id)
    job = get_job(job_id)
    if job is None or not current_identity().can_see(job.user_id):
        raise JobNotFoundError(f"Job {job_id} does not exist")
    return job


def _view(job: Job) -> dict[str, Any]:
    return job_view(job, current_identity().is_admin)


def _target_user(body: dict[str, Any]) -> str:
    """The user a trigger runs for: the caller, or for the admin the body's user_id."""
    identity = current_identity()
    if not identity.is_admin:
        return identity.user_id or ""
    if body.get("user_id") in (None, ""):
        raise ParamError("the admin token must name the user: add \"user_id\" to the body")
    return user_id_value(body["user_id"])


@jobs_bp.get("/<job_id>")
@require_identity
def job_status(job_id: str):
    return ok(_view(visible_job(job_id)))


@jobs_bp.post("/<job_id>/cancel")
@require_identity
def cancel(job_id: str):
    visible_job(job_id)
    job = cancel_job(job_id)
    audit.record(actor(current_identity()), "cancel", job_id, "api")
    return ok(_view(job))


@jobs_bp.post("/<job_id>/stop")
@require_identity
def stop(job_id: str):
    """Stop a job (owner or admin): a running one is ended by its worker, a waiting one canceled."""
    visible_job(job_id)
    who = actor(current_identity())
    job = stop_job(job_id, by=who)
    audit.record(who, "stop", job_id, "api")
    return ok(_view(job), 202 if job.status.value == "running" else 200)


@jobs_bp.post("/queue/<queue_name>/pause")
@require_admin
def pause_queue(queue_name: str):
    """Workers take no new jobs from the queue (running ones finish); survives restarts."""
    return _queue_control(queue_name, pause=True)


@jobs_bp.post("/queue/<queue_name>/resume")
@require_admin
def resume_queue(queue_name: str):
    return _queue_control(queue_name, pause=False)


def _queue_control(queue_name: str, pause: bool) -> Any:
    queue = get_queue(queue_name)
    changed = queue.pause() if pause else queue.resume()
    audit.record(actor(current_identity()), "pause" if pause else "resume", f"queue:{queue.short_name}", "api")
    return ok({"queue": queue.short_name, "paused": pause, "changed": changed})


@jobs_bp.post("/<job_id>/retry")
@require_admin
def retry(job_id: str):
    visible_job(job_id)
    job = retry_job(job_id)
    audit.record(actor(current_identity()), "retry", job_id, "api")
    return ok(_view(job))


@jobs_bp.get("/batch/<batch_id>")
@require_identity
def batch_progress(batch_id: str):
    """A batch's progress (owner or admin): total, completed, failed, canceled, pending, done."""
    from core.api.batches import get_batch

    progress = get_batch(batch_id)
    if not current_identity().can_see(progress["user_id"]):
        raise JobNotFoundError(f"batch {batch_id} does not exist (or ended more than JOBS_RESULT_TTL ago)")
    return ok(progress)


@jobs_bp.get("/queue/<queue_name>/stats")
@require_admin
def queue_stats(queue_name: str):
    queue = get_queue(queue_name)
    return ok({"queue": queue.short_name, "stats": queue.get_stats()})


@jobs_bp.get("/queue/<queue_name>/groups")
@require_admin
def queue_groups(queue_name: str):
    """The queue's job groups with jobs waiting or running, largest backlog first, paged
    (``?page=&limit=``): waiting, running, oldest_age (s), weight, paused (core/queue/groups.py)."""
    from core.queue.groups import list_groups

    queue = get_queue(queue_name)
    limit = limit_arg()
    page = int_arg("page", 1, 1, FAILED_PAGE_MAX)
    listed = list_groups(queue.short_name, limit=limit, offset=(page - 1) * limit)
    return ok({"queue": queue.short_name, "page": page, "limit": limit, **listed})


@jobs_bp.post("/queue/<queue_name>/groups/<group>/pause")
@require_admin
def pause_group(queue_name: str, group: str):
    """Hold one job group of the queue (its jobs wait; running ones finish); the others go on."""
    return _group_control(queue_name, group, pause=True)


@jobs_bp.post("/queue/<queue_name>/groups/<group>/resume")
@require_admin
def resume_group(queue_name: str, group: str):
    return _group_control(queue_name, group, pause=False)


def _group_control(queue_name: str, group: str, pause: bool) -> Any:
    queue = get_queue(queue_name)
    changed = queue.pause_group(group) if pause else queue.resume_group(group)
    audit.record(actor(current_identity()), "pause_group" if pause else "resume_group",
                 f"group:{queue.short_name}:{group}", "api")
    return ok({"queue": queue.short_name, "group": group, "paused": pause, "changed": changed})


@jobs_bp.post("/queue/<queue_name>/groups/<group>/weight")
@require_admin
def group_weight(queue_name: str, group: str):
    """Set a job group's weight (JSON ``{"weight": w}``, 0 < w <= 1000; 1 is the default share)."""
    queue = get_queue(queue_name)
    weight = json_body().get("weight")
    queue.set_group_weight(group, weight)  # a bad weight is a 400 naming it (core.queue.groups)
    audit.record(actor(current_identity()), "group_weight", f"group:{queue.short_name}:{group}", "api")
    return ok({"queue": queue.short_name, "group": group, "weight": float(weight)})


@jobs_bp.get("/queues/stats")
@require_admin
def all_queue_stats():
    return ok([{"queue": q.short_name, "stats": q.get_stats()} for q in all_queues()])


@jobs_bp.get("/queue/<queue_name>/failed")
@require_admin
def failed_jobs(queue_name: str):
    queue = get_queue(queue_name)
    jobs = queue.get_failed_jobs(limit_arg())
    return ok({"queue": queue.short_name, "jobs": [_view(j) for j in jobs]})


@jobs_bp.get("/failed")
@require_admin
def failed_list():
    """Failed jobs of every queue matching the filters, newest failure first (core/api/dead_letters.py)."""
    from core.api.dead_letters import FailedFilter, list_failed

    flt = FailedFilter.parse(request.args, strict=False)  # unknown query parameters are ignored, as elsewhere
    page = list_failed(flt, int_arg("page", 1, 1, FAILED_PAGE_MAX), limit_arg())
    return ok({**page.to_dict(_view), "filter": flt.to_dict()})


@jobs_bp.post("/failed/retry")
@require_admin
def failed_retry():
    """Requeue every failed job matching the body's filters; ``"dry_run": true`` only counts them."""
    return _failed_bulk("retry")


@jobs_bp.post("/failed/delete")
@require_admin
def failed_delete():
    """Delete every failed job matching the body's filters; ``"dry_run": true`` only counts them."""
    return _failed_bulk("delete")


def _failed_bulk(verb: str) -> Any:
    from core.api.dead_letters import FailedFilter, delete_failed, retry_failed

    body = json_body()
    dry_run = bool(body_bool(body, "dry_run", False))
    flt = FailedFilter.parse(body, extra=("dry_run",))
    outcome = (retry_failed if verb == "retry" else delete_failed)(flt, dry_run=dry_run)
    if not dry_run:
        done = outcome["retried" if verb == "retry" else "deleted"]
        audit.record(actor(current_identity()), f"failed.{verb}", flt.describe(), "api",
                     detail=f"{done} of {outcome['matched']} matched")
    return ok(outcome)


@jobs_bp.get("/user/<user_id>/recent")
@require_identity
def user_recent(user_id: str):
    user_id_value(user_id)
    identity = current_identity()
    if not identity.is_admin and identity.user_id != user_id:
        raise ForbiddenError("a user token may list only its own jobs")
    jobs = get_user_jobs(user_id, limit_arg())
    return ok({"user_id": user_id, "jobs": [_view(j) for j in jobs]})


@jobs_bp.post("/sync/trigger")
@require_identity
def trigger_sync():
    from email_automation.gmail_sync_jobs import SYNC_TYPES, GmailSyncJobManager

    body = json_body()
    sync_type = parse_choice("sync_type", body.get("sync_type", "manual"), SYNC_TYPES)
    full_sync = body_bool(body, "full_sync")
    lookback_days = body_int(body, "lookback_days", 1, LOOKBACK_DAYS_MAX)
    job_id = GmailSyncJobManager().queue_sync_job(_target_user(body), sync_type=sync_type, full_sync=full_sync,
                                                  lookback_days=lookback_days)
    return ok({"job_id": job_id}, 202)


@jobs_bp.post("/ai/trigger")
@require_identity
def trigger_ai():
    body = json_body()
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ParamError("\"prompt\" must be a non-empty string")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise ParamError(f"\"prompt\" is {len(prompt)} characters; at most {PROMPT_MAX_CHARS} are accepted")
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
        fallback = get_fallback()
        data["fallback_pending"] = fallback.pending_count()
        age = fallback.oldest_age()
        data["fallback_oldest_age"] = round(age, 3) if age is not None else None
        if reachable:
            stats = {q.short_name: q.get_stats() for q in all_queues()}
            data["workers"] = {name: s["workers"] for name, s in stats.items()}
            data["paused_queues"] = [name for name, s in stats.items() if s["paused"]]
        scheduler = scheduler_status() if reachable else {"alive": False, "last_tick": None}
        data["scheduler_alive"] = scheduler["alive"]  # a periodic scheduler ticked within 3 of its intervals
        data["scheduler_last_tick"] = scheduler["last_tick"]  # epoch s, None when none ever ticked
    return ok(data)


@jobs_bp.get("/audit")
@require_admin
def audit_log():
    """Operator actions, newest first (who, action, target, source, at)."""
    return ok({"entries": audit.recent(int_arg("limit", 50, 1, AUDIT_LIMIT_MAX))})


@jobs_bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document itself (not wrapped: tools read it as it is), of what is mounted."""
    extension = current_app.extensions.get("fikiri_jobs")
    return jsonify(extension.openapi_document() if extension else openapi_document())
