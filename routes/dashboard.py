"""The operator dashboard at /dashboard: server-rendered pages, a little plain JavaScript.

Behind the same auth as the API: a login form takes a token (admin, or a user token) and keeps
it in Flask's signed, HttpOnly, SameSite=Strict session cookie. The admin sees everything; a
user token sees only that user's jobs. Every action is a POST carrying the session's CSRF token,
and destructive ones ask for confirmation in the browser. Lists are ranged reads (50 a page),
so a state holding 10,000+ jobs renders as fast as one holding ten.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from core import job_ops, monitoring, periodic
from core.auth import Identity, resolve_identity
from core.config import get_settings
from core.connection import redis_available
from core.errors import JobsError
from core.fallback import get_fallback
from core.job_model import Job
from core.redis_queues import all_queues, cancel_job, fetch_jobs, get_job, get_queue, get_user_jobs, retry_job

logger = logging.getLogger(__name__)

dashboard_bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                         static_folder="static/dashboard", static_url_path="/static")

PAGE_SIZE = 50
STATES = ("pending", "delayed", "running", "completed", "failed", "canceled")


# --- auth and CSRF -------------------------------------------------------------------------------
def _identity() -> Identity | None:
    if "dash_identity" in g:
        return g.dash_identity
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else session.get("token")
    identity = None
    if token:
        try:
            identity = resolve_identity(token)
        except JobsError:
            session.pop("token", None)
    g.dash_identity = identity
    return identity


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@dashboard_bp.before_request
def _guard():
    if not get_settings().secret_key:
        return ("The dashboard needs SECRET_KEY (it signs the session cookie); set it and restart.", 503)
    if request.endpoint in ("dashboard.login", "dashboard.static"):
        return None
    if _identity() is None:
        if request.path.startswith("/dashboard/api/"):
            return jsonify({"success": False, "error": {"code": "unauthorized", "message": "log in first"}}), 401
        return redirect(url_for("dashboard.login", next=request.path))
    if request.method == "POST":
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), _csrf_token().encode()):
            abort(400, description="missing or wrong CSRF token; reload the page and try again")
    return None


def _admin_only() -> None:
    if not _identity().is_admin:
        abort(403, description="this page needs the admin token")


@dashboard_bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": _csrf_token, "identity": lambda: g.get("dash_identity"), "states": STATES}


@dashboard_bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        token = request.form.get("token", "").strip()
        try:
            resolve_identity(token or None)
        except JobsError as exc:
            error = exc.message
        else:
            session.clear()
            session["token"] = token
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/dashboard") else url_for("dashboard.overview"))
    return render_template("dashboard/login.html", error=error), (401 if error else 200)


@dashboard_bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("dashboard.login"))


# --- data helpers ---------------------------------------------------------------------------------
def _visible(job: Job | None) -> Job:
    if job is None or not _identity().can_see(job.user_id):
        abort(404, description="no such job")
    return job


def _page_ids(queue_short: str, state: str, page: int) -> tuple[list[str], int]:
    """Ids on one page of a queue's state (newest first for ended states) and the state's size."""
    return job_ops.page_ids(queue_short, state, page * PAGE_SIZE, PAGE_SIZE)


def _attempts(job_id: str) -> list[dict[str, Any]]:
    """Per-attempt history is not stored yet (the job shows its retry count and last error)."""
    return []


# --- pages ------------------------------------------------------------------------------------------
def _overview_data() -> dict[str, Any]:
    up = redis_available()
    data: dict[str, Any] = {"redis": up, "fallback_pending": get_fallback().pending_count()}
    if _identity().is_admin and up:
        data["queues"] = [{"queue": q.short_name, **q.get_stats()} for q in all_queues()]
        data["rate"] = monitoring.processing_rate(15)
    else:
        data["jobs"] = [j.to_dict() for j in get_user_jobs(_identity().user_id or "", 20)] if up else []
    return data


@dashboard_bp.get("/")
def overview():
    return render_template("dashboard/overview.html", data=_overview_data())


@dashboard_bp.get("/api/overview")
def overview_json():
    return jsonify({"success": True, "data": _overview_data()})


@dashboard_bp.get("/queue/<queue_name>")
def queue_page(queue_name: str):
    _admin_only()
    queue = get_queue(queue_name)
    state = request.args.get("state", "pending")
    if state not in STATES:
        abort(400, description=f"unknown state {state[:40]!r}; accepted: {', '.join(STATES)}")
    page_arg = request.args.get("page", "0")
    if not page_arg.isdigit() or int(page_arg) > 1_000_000:
        abort(400, description="page must be a whole number")
    page = int(page_arg)
    ids, total = _page_ids(queue.short_name, state, page)
    jobs = fetch_jobs(ids)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    return render_template("dashboard/queue.html", queue=queue.short_name, state=state, jobs=jobs, page=page,
                           pages=pages, total=total, stats=queue.get_stats())


@dashboard_bp.get("/job/<job_id>")
def job_page(job_id: str):
    job = _visible(get_job(job_id))
    return render_template("dashboard/job.html", job=job, attempts=_attempts(job_id) if job.mode == "redis" else [])


@dashboard_bp.get("/failures")
def failures_page():
    _admin_only()
    per_queue = {q.short_name: q.get_failed_jobs(PAGE_SIZE) for q in all_queues()}
    return render_template("dashboard/failures.html", per_queue=per_queue)


@dashboard_bp.get("/scheduler")
def scheduler_page():
    _admin_only()
    return render_template("dashboard/scheduler.html", entries=periodic.list_periodic_jobs())


@dashboard_bp.get("/metrics")
def metrics_page():
    _admin_only()
    return render_template("dashboard/metrics.html", tasks=monitoring.get_task_stats(),
                           failures=monitoring.get_recent_failures(20, 24))


# --- actions ------------------------------------------------------------------------------------------
def _back(default: str) -> Any:
    target = request.form.get("next", "")
    return redirect(target if target.startswith("/dashboard") else default)


def _act(action, message: str) -> None:
    try:
        action()
        flash(message, "ok")
    except JobsError as exc:
        flash(exc.message, "error")


@dashboard_bp.post("/job/<job_id>/retry")
def job_retry(job_id: str):
    _admin_only()
    _visible(get_job(job_id))
    _act(lambda: retry_job(job_id), f"job {job_id} requeued")
    return _back(url_for("dashboard.job_page", job_id=job_id))


@dashboard_bp.post("/job/<job_id>/cancel")
def job_cancel(job_id: str):
    _visible(get_job(job_id))
    _act(lambda: cancel_job(job_id), f"job {job_id} canceled")
    return _back(url_for("dashboard.job_page", job_id=job_id))


@dashboard_bp.post("/job/<job_id>/delete")
def job_delete(job_id: str):
    _admin_only()
    _visible(get_job(job_id))
    _act(lambda: job_ops.delete_job(job_id), f"job {job_id} deleted")
    return _back(url_for("dashboard.failures_page"))


@dashboard_bp.post("/queue/<queue_name>/retry-failed")
def retry_all_failed(queue_name: str):
    _admin_only()
    queue = get_queue(queue_name)
    ids = [j.job_id for j in queue.get_failed_jobs(10_000)]
    done = 0
    for job_id in ids:
        try:
            retry_job(job_id)
            done += 1
        except JobsError as exc:
            logger.warning("retry of %s failed: %s", job_id, exc.message)
    flash(f"requeued {done} failed job(s) of {queue.short_name}", "ok")
    return _back(url_for("dashboard.failures_page"))


@dashboard_bp.post("/scheduler/<periodic_id>/<action>")
def scheduler_action(periodic_id: str, action: str):
    _admin_only()
    actions = {"pause": periodic.pause_periodic, "resume": periodic.resume_periodic,
               "run": periodic.run_periodic_now}
    if action not in actions:
        abort(404)
    _act(lambda: actions[action](periodic_id), f"{periodic_id}: {action} done")
    return redirect(url_for("dashboard.scheduler_page"))


@dashboard_bp.app_template_filter("when")
def _when(epoch: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch else "-"


def register_dashboard(app: Flask) -> None:
    app.register_blueprint(dashboard_bp)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
