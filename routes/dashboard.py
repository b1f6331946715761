"""The operator dashboard at /dashboard: server-rendered pages, a little plain JavaScript.

Behind the same auth as the API: a login form (itself CSRF-protected) takes a token (admin, or
a user token) and starts a server-side session (routes.dashboard_sessions): the cookie holds a
random id, never the token. The admin sees everything, tracebacks included; a user token sees
only that user's jobs, and of an error only its type and message. Every action is a POST
carrying the session's CSRF token, is written to the audit log, and destructive ones ask for
confirmation in the browser. Bad input (a malformed id, an unknown queue, ``page=²``) answers a
4xx page, never a 500. Lists are ranged reads (50 a page),
so a state holding 10,000+ jobs renders as fast as one holding ten.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from typing import Any

import redis
from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from core.api import jobs
from core.api.jobs import cancel_job, fetch_jobs, get_job, get_user_jobs, retry_job, stop_job
from core.api.queues import all_queues, get_queue
from core.config import get_settings
from core.errors import JobNotFoundError, JobsError
from core.fallback.executor import get_fallback
from core.ops import audit
from core.ops import dashboard_queries as queries
from core.platform.auth import Identity, resolve_identity
from core.platform.connection import get_redis, is_redis_down, redis_available
from core.queue import task_metrics
from core.queue.job_model import Job
from core.queue.job_options import validate_job_id
from core.queue.task_registry import all_tasks
from core.schedule import periodic
from routes import dashboard_sessions as sessions
from routes.params import ParamError, choice_arg, int_arg, name_value, parse_choice, user_id_value
from routes.views import attempt_view, job_view, user_error

logger = logging.getLogger(__name__)
DASHBOARD_STREAM_HEARTBEAT = 3.0  # s: see events_stream

dashboard_bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                         static_folder="static/dashboard", static_url_path="/static")

PAGE_SIZE = 50
PAGE_MAX = 1_000_000
AUDIT_PAGE_SIZE = 100
STATES = ("pending", "delayed", "running", "completed", "failed", "canceled")
SEARCH_KINDS = ("id", "user", "task")
SEARCH_MAX_CHARS = 128  # the longest job id, user id or task name there can be
SEARCH_LIMIT = 100  # jobs shown; a user's index holds the newest JOBS_USER_INDEX_SIZE (100) anyway


class SearchForbiddenError(JobsError):
    """A user token searching for someone else's jobs."""

    code = "forbidden"
    http_status = 403


# --- auth, sessions and CSRF ---------------------------------------------------------------------
def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _session() -> sessions.DashboardSession | None:
    if "dash_session" not in g:
        g.dash_session = sessions.load_session(request.cookies.get(sessions.COOKIE_NAME))
    return g.dash_session


def _identity() -> Identity | None:
    if "dash_identity" in g:
        return g.dash_identity
    identity = None
    token = _bearer()
    if token:
        try:
            identity = resolve_identity(token)
        except JobsError:
            identity = None
    elif _session() is not None:
        identity = _session().identity
    g.dash_identity = identity
    return identity


def _csrf_token() -> str:
    current = _session()
    return current.csrf if current is not None else ""


def _root() -> str:
    """Where the dashboard is mounted (``/dashboard``, or the host's JOBS_DASHBOARD_PREFIX)."""
    return url_for("dashboard.overview").rstrip("/") or "/"


def _actor() -> str:
    identity = _identity()
    return "admin" if identity.is_admin else f"user:{identity.user_id}"


def _login_redirect() -> Any:
    response = make_response(redirect(url_for("dashboard.login", next=request.path)))
    if request.cookies.get(sessions.COOKIE_NAME):
        sessions.clear_session_cookie(response)  # expired or revoked: drop the dead id
    return response


@dashboard_bp.before_request
def _guard():
    if not get_settings().secret_key:
        return ("The dashboard needs SECRET_KEY (it signs the login form); set it and restart.", 503)
    if request.endpoint in ("dashboard.login", "dashboard.static"):
        return None
    if _identity() is None:
        if request.path.startswith(_root() + "/api/"):
            return jsonify({"success": False, "error": {"code": "unauthorized", "message": "log in first"}}), 401
        return _login_redirect()
    if request.method == "POST" and not _bearer():  # a bearer header is not ambient: no CSRF to fear
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent.encode(), _csrf_token().encode()):
            abort(400, description="missing or wrong CSRF token; reload the page and try again")
    return None


def _admin_only() -> None:
    if not _identity().is_admin:
        abort(403, description="this page needs the admin token")


@dashboard_bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": _csrf_token, "identity": lambda: g.get("dash_identity"), "states": STATES,
            "events_after": _events_after}


def _events_after() -> str:
    """The events stream's newest id as the page is rendered: the page's live updates start after
    it, so they never replay what the page already shows (a job's ended run, say)."""
    from core.events.stream import last_entry_id

    try:
        return last_entry_id(get_redis())
    except redis.RedisError:
        return ""


def _cross_site() -> bool:
    """A POST whose Origin (sent by browsers on cross-site POSTs) is not this host."""
    origin = request.headers.get("Origin")
    return origin is not None and origin.rstrip("/") != request.host_url.rstrip("/")


def _login_page(error: str | None, status: int) -> Any:
    nonce = sessions.new_login_nonce()
    response = make_response(render_template("dashboard/login.html", error=error,
                                             login_csrf=sessions.login_form_token(nonce)), status)
    sessions.set_login_cookie(response, nonce)
    return response


@dashboard_bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return _login_page(None, 200)
    if _cross_site() or not sessions.login_token_valid(request.cookies.get(sessions.LOGIN_CSRF_COOKIE),
                                                       request.form.get("csrf_token")):
        return _login_page("the login form expired or came from another site; log in again from this page", 400)
    token = request.form.get("token", "").strip()
    try:
        identity = resolve_identity(token or None)
    except JobsError as exc:
        return _login_page(exc.message, 401)
    sessions.revoke_session(request.cookies.get(sessions.COOKIE_NAME))
    new_session = sessions.create_session(identity)
    target = request.args.get("next", "")
    safe = target.startswith(_root()) and not target.startswith("//") and "\\" not in target
    response = make_response(redirect(target if safe else url_for("dashboard.overview")))
    sessions.set_session_cookie(response, new_session)
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path=sessions.cookie_path())
    return response


@dashboard_bp.post("/logout")
def logout():
    sessions.revoke_session(request.cookies.get(sessions.COOKIE_NAME))
    response = make_response(redirect(url_for("dashboard.login")))
    sessions.clear_session_cookie(response)
    return response


# --- errors: a page (or JSON under /dashboard/api/), never a 500 for bad input ---------------------
def _error_page(status: int, message: str) -> Any:
    if request.path.startswith(_root() + "/api/"):
        return jsonify({"success": False, "error": {"code": str(status), "message": message}}), status
    return render_template("dashboard/error.html", status=status, message=message), status


@dashboard_bp.errorhandler(JobsError)
def _jobs_error(exc: JobsError) -> Any:
    return _error_page(exc.http_status, exc.message)


def _http_error(exc: HTTPException) -> Any:
    return _error_page(exc.code or 500, exc.description or exc.name)


# By code as well as by class: Flask consults code handlers (the app's own 404 handler) first.
dashboard_bp.register_error_handler(HTTPException, _http_error)
for _code in (400, 401, 403, 404, 405, 409, 413, 415, 429):
    dashboard_bp.register_error_handler(_code, _http_error)


@dashboard_bp.errorhandler(redis.RedisError)
def _redis_error(exc: redis.RedisError) -> Any:
    if is_redis_down(exc):
        logger.warning("Redis unreachable on %s %s: %s", request.method, request.path, exc)
        return _error_page(503, "Redis is unreachable; try again in a moment")
    logger.error("Redis answered an error on %s %s", request.method, request.path, exc_info=exc)
    return _error_page(500, f"Redis answered an error ({type(exc).__name__}); it has been logged")


# --- data helpers ---------------------------------------------------------------------------------
def _visible(job_id: str) -> Job:
    job = get_job(validate_job_id(job_id))
    if job is None or not _identity().can_see(job.user_id):
        abort(404, description="no such job")
    return job


def _for_viewer(job: Job) -> Job:
    """The job as this viewer may see it: a user gets the error without traceback or paths."""
    return job if _identity().is_admin else dataclasses.replace(job, error=user_error(job.error))


def _page_ids(queue_short: str, state: str, page: int) -> tuple[list[str], int]:
    """Ids on one page of a queue's state (newest first for ended states) and the state's size."""
    return jobs.page_ids(queue_short, state, page * PAGE_SIZE, PAGE_SIZE)


def _attempts(job_id: str) -> list[dict[str, Any]]:
    """Per-attempt history is not stored yet (the job shows its retry count and last error)."""
    return []


# --- pages ------------------------------------------------------------------------------------------
def _chart_range() -> str:
    """The throughput chart's range from ``?range=`` (``1h`` or ``24h``; 1 h when absent)."""
    return choice_arg("range", "1h", queries.THROUGHPUT_RANGES)


def _overview_data(chart_range: str) -> dict[str, Any]:
    """What the overview shows; the page and its 3-second refresh (``api/overview``) share it, so
    a column added to the queue table (see ``_queue_table.html``) refreshes without more code."""
    up = redis_available()
    data: dict[str, Any] = {"redis": up, "fallback_pending": get_fallback().pending_count()}
    if _identity().is_admin and up:
        data["queues"] = [{"queue": q.short_name, **q.get_stats()} for q in all_queues()]
        data["throughput"] = queries.throughput(chart_range)
    else:
        data["jobs"] = [job_view(j, False) for j in get_user_jobs(_identity().user_id or "", 20)] if up else []
    return data


@dashboard_bp.get("/")
def overview():
    return render_template("dashboard/overview.html", data=_overview_data(_chart_range()))


@dashboard_bp.get("/api/overview")
def overview_json():
    return jsonify({"success": True, "data": _overview_data(_chart_range())})


@dashboard_bp.get("/workers")
def workers_page():
    _admin_only()
    settings = get_settings()
    return render_template("dashboard/workers.html", workers=queries.list_workers(),
                           stale_after=settings.worker_heartbeat_interval + settings.worker_heartbeat_grace)


@dashboard_bp.get("/api/workers")
def workers_json():
    _admin_only()
    return jsonify({"success": True, "data": [w.to_dict() for w in queries.list_workers()]})


@dashboard_bp.get("/queue/<queue_name>")
def queue_page(queue_name: str):
    _admin_only()
    queue = get_queue(queue_name)
    state = choice_arg("state", "pending", STATES)
    page = int_arg("page", 0, 0, PAGE_MAX)
    ids, total = _page_ids(queue.short_name, state, page)
    jobs = fetch_jobs(ids)
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    return render_template("dashboard/queue.html", queue=queue.short_name, state=state, jobs=jobs, page=page,
                           pages=pages, total=total, stats=queue.get_stats())


@dashboard_bp.get("/api/events")
def events_stream():
    """Live events for the dashboard's pages (its session, not a bearer token: EventSource cannot
    send one). The admin gets every job's events, a user only their own; ``?job=`` narrows to one
    job the caller may see. Same stream, limits and Last-Event-ID resume as ``/api/jobs/events``."""
    from core.events.stream import EventFilter
    from routes.events import event_stream_response

    identity = _identity()
    job_id = request.args.get("job")
    if job_id:
        _visible(job_id)
    # a short heartbeat: a page left behind (the reader clicked on) is noticed, and its stream slot
    # handed back, within DASHBOARD_STREAM_HEARTBEAT seconds
    return event_stream_response(EventFilter(job_id=job_id or None,
                                             user_id=None if identity.is_admin else identity.user_id),
                                 heartbeat=DASHBOARD_STREAM_HEARTBEAT)


@dashboard_bp.get("/batch/<batch_id>")
def batch_page(batch_id: str):
    """A batch: its progress and its members (owner or admin), PAGE_SIZE members a page."""
    from core.api import batches

    progress = batches.get_batch(batch_id)
    identity = _identity()
    if not identity.can_see(progress["user_id"]):
        raise JobNotFoundError(f"batch {batch_id} does not exist (or ended more than JOBS_RESULT_TTL ago)")
    page = int_arg("page", 0, 0, PAGE_MAX)
    jobs = [_for_viewer(j) for j in fetch_jobs(batches.batch_job_ids(batch_id, page * PAGE_SIZE, PAGE_SIZE))]
    pages = max(1, (progress["total"] + PAGE_SIZE - 1) // PAGE_SIZE)
    return render_template("dashboard/batch.html", batch=progress, jobs=jobs, page=page, pages=pages)


@dashboard_bp.get("/job/<job_id>")
def job_page(job_id: str):
    job = _visible(job_id)
    attempts = [attempt_view(a, _identity().is_admin) for a in _attempts(job_id)] if job.mode == "redis" else []
    return render_template("dashboard/job.html", job=_for_viewer(job), attempts=attempts)


def _failed_filter_values(source: Any) -> dict[str, str]:
    """The failed-jobs filters of a query string or form, as given (empty ones left out)."""
    from core.api.dead_letters import FILTER_KEYS

    return {k: source.get(k, "").strip() for k in FILTER_KEYS if source.get(k, "").strip()}


@dashboard_bp.get("/failures")
def failures_page():
    """Failed jobs of every queue, filtered (core/api/dead_letters.py), with bulk retry and delete."""
    from core.api.dead_letters import FailedFilter, list_failed

    _admin_only()
    raw = _failed_filter_values(request.args)
    page = int_arg("page", 1, 1, PAGE_MAX)
    context = {"queues": [q.short_name for q in all_queues()], "raw": raw, "filters": {}, "error": None,
               "scan_max": get_settings().failed_scan_max}
    try:
        flt = FailedFilter.parse(raw)
        found = list_failed(flt, page, PAGE_SIZE)
    except JobsError as exc:
        return render_template("dashboard/failures.html", **{**context, "error": exc.message}), exc.http_status
    return render_template("dashboard/failures.html", **{
        **context, "filters": flt.to_dict(), "found": found, "description": flt.describe(),
        "pages": max(1, (found.total + PAGE_SIZE - 1) // PAGE_SIZE)})


@dashboard_bp.post("/failures/<action>")
def failed_bulk(action: str):
    """Retry or delete every failed job matching the form's filters (admin; one audit entry)."""
    from core.api.dead_letters import FailedFilter, delete_failed, retry_failed

    _admin_only()
    if action not in ("retry", "delete"):
        abort(404, description=f"unknown failed-jobs action {action[:40]!r}; accepted: retry, delete")
    raw = _failed_filter_values(request.form)
    flt = FailedFilter.parse(raw)
    outcome = (retry_failed if action == "retry" else delete_failed)(flt)
    done = outcome["retried" if action == "retry" else "deleted"]
    audit.record(_actor(), f"failed.{action}", flt.describe(), "dashboard", detail=f"{done} of {outcome['matched']} matched")
    flash(f"{'requeued' if action == 'retry' else 'deleted'} {done} of {outcome['matched']} failed job(s) matching "
          f"{flt.describe()}", "ok")
    return redirect(url_for("dashboard.failures_page", **raw))


@dashboard_bp.get("/scheduler")
def scheduler_page():
    _admin_only()
    return render_template("dashboard/scheduler.html", entries=periodic.list_periodic_jobs())


@dashboard_bp.get("/audit")
def audit_page():
    _admin_only()
    return render_template("dashboard/audit.html", entries=audit.recent(AUDIT_PAGE_SIZE))


@dashboard_bp.get("/metrics")
def metrics_page():
    _admin_only()
    return render_template("dashboard/metrics.html", tasks=task_metrics.get_task_stats(),
                           failures=task_metrics.get_recent_failures(20, 24))


# --- search: by job id (straight to the job), by user (their index), by task (bounded scan) ------
def _search_id(text: str) -> Any:
    job_id = validate_job_id(text)
    job = get_job(job_id)
    if job is None or not _identity().can_see(job.user_id):
        raise JobNotFoundError(f"no job with id {job_id!r}: it never existed, or it ended and has expired")
    return redirect(url_for("dashboard.job_page", job_id=job_id))


def _search_user(text: str) -> tuple[list[Job], str]:
    user = user_id_value(text, "user")
    identity = _identity()
    if not identity.is_admin and user != identity.user_id:
        raise SearchForbiddenError(f"a user token can search only its own jobs (user {identity.user_id}); "
                                   "log in with the admin token to search another user's")
    jobs = get_user_jobs(user, SEARCH_LIMIT)
    kept = get_settings().user_index_size
    return jobs, f"{len(jobs)} job(s) of user {user}, newest first (each user's index keeps the newest {kept})"


def _search_task(text: str) -> tuple[list[Job], str]:
    task = name_value("task", text)
    identity = _identity()
    if identity.is_admin:
        found = queries.find_jobs_by_task(task, SEARCH_LIMIT)
        scope = "all jobs" if found.complete else f"the newest {found.per_state} of each state of each queue"
        jobs, note = found.jobs, f"{len(found.jobs)} job(s) of task {task} among {scope} ({found.scanned} looked at)"
    else:
        jobs = [j for j in get_user_jobs(identity.user_id or "", SEARCH_LIMIT) if j.task_name == task]
        note = f"{len(jobs)} of your job(s) of task {task}"
    registered = sorted({name for names in all_tasks().values() for name in names})
    if not jobs and task not in registered:
        note += f"; no task {task!r} is registered (registered: {', '.join(registered)})"
    return jobs, note + (f", the newest {SEARCH_LIMIT} shown" if len(jobs) >= SEARCH_LIMIT else "")


def _search_page(by: str, text: str, status: int = 200, **found: Any) -> Any:
    return render_template("dashboard/search.html", by=by, q=text[:SEARCH_MAX_CHARS], kinds=SEARCH_KINDS,
                           **found), status


@dashboard_bp.get("/search")
def search_page():
    """Find jobs by id, user or task. Bad input answers this page with the reason (400/403/404)."""
    raw_by, text = request.args.get("by", "id"), (request.args.get("q") or "").strip()
    by = raw_by if raw_by in SEARCH_KINDS else "id"
    if not text:
        return _search_page(by, "")
    try:
        parse_choice("search kind", raw_by, SEARCH_KINDS)
        if len(text) > SEARCH_MAX_CHARS:
            raise ParamError(f"the search text is {len(text)} characters long; at most {SEARCH_MAX_CHARS} are "
                             f"accepted (job ids, user ids and task names are no longer)")
        if by == "id":
            return _search_id(text)
        jobs, note = (_search_user if by == "user" else _search_task)(text)
    except JobsError as exc:
        return _search_page(by, text, exc.http_status, error=exc.message)
    return _search_page(by, text, jobs=[_for_viewer(j) for j in jobs], note=note)


# --- actions ------------------------------------------------------------------------------------------
def _back(default: str) -> Any:
    target = request.form.get("next", "")
    return redirect(target if target.startswith(_root()) else default)


def _act(action, message: str, audit_action: str, target: str) -> None:
    try:
        action()
    except JobsError as exc:
        flash(exc.message, "error")
        return
    audit.record(_actor(), audit_action, target, "dashboard")
    flash(message, "ok")


@dashboard_bp.post("/job/<job_id>/retry")
def job_retry(job_id: str):
    _admin_only()
    _visible(job_id)
    _act(lambda: retry_job(job_id), f"job {job_id} requeued", "retry", job_id)
    return _back(url_for("dashboard.job_page", job_id=job_id))


@dashboard_bp.post("/job/<job_id>/cancel")
def job_cancel(job_id: str):
    _visible(job_id)
    _act(lambda: cancel_job(job_id), f"job {job_id} canceled", "cancel", job_id)
    return _back(url_for("dashboard.job_page", job_id=job_id))


@dashboard_bp.post("/job/<job_id>/stop")
def job_stop(job_id: str):
    """Stop a running job (owner or admin): its worker ends it; it ends canceled, not retried."""
    _visible(job_id)
    _act(lambda: stop_job(job_id, by=_actor()), f"job {job_id}: stop requested; its worker ends it at its next "
         f"heartbeat", "stop", job_id)
    return _back(url_for("dashboard.job_page", job_id=job_id))


@dashboard_bp.post("/queue/<queue_name>/<action>")
def queue_control(queue_name: str, action: str):
    """Pause or resume a queue (admin)."""
    _admin_only()
    if action not in ("pause", "resume"):
        abort(404, description=f"unknown queue action {action[:40]!r}; accepted: pause, resume")
    queue = get_queue(queue_name)
    verb = queue.pause if action == "pause" else queue.resume
    _act(verb, f"queue {queue.short_name} {'paused' if action == 'pause' else 'resumed'}", action,
         f"queue:{queue.short_name}")
    return _back(url_for("dashboard.overview"))


@dashboard_bp.post("/queue/<queue_name>/group/<group>/<action>")
def group_control(queue_name: str, group: str, action: str):
    """Pause or resume one job group of a queue (admin)."""
    _admin_only()
    if action not in ("pause", "resume"):
        abort(404, description=f"unknown group action {action[:40]!r}; accepted: pause, resume")
    queue = get_queue(queue_name)
    verb = (lambda: queue.pause_group(group)) if action == "pause" else (lambda: queue.resume_group(group))
    _act(verb, f"group {group} of {queue.short_name} {'paused' if action == 'pause' else 'resumed'}",
         f"{action}_group", f"group:{queue.short_name}:{group}")
    return _back(url_for("dashboard.queue_page", queue_name=queue.short_name))


@dashboard_bp.post("/job/<job_id>/delete")
def job_delete(job_id: str):
    _admin_only()
    _visible(job_id)
    _act(lambda: jobs.delete_job(job_id), f"job {job_id} deleted", "delete", job_id)
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
    audit.record(_actor(), "retry_all_failed", queue.short_name, "dashboard", detail=f"{done} of {len(ids)} requeued")
    flash(f"requeued {done} failed job(s) of {queue.short_name}", "ok")
    return _back(url_for("dashboard.failures_page"))


@dashboard_bp.post("/scheduler/<periodic_id>/<action>")
def scheduler_action(periodic_id: str, action: str):
    _admin_only()
    actions = {"pause": periodic.pause_periodic, "resume": periodic.resume_periodic,
               "run": periodic.run_periodic_now}
    if action not in actions:
        abort(404, description=f"unknown scheduler action {action[:40]!r}; accepted: pause, resume, run")
    name_value("periodic job id", periodic_id)
    _act(lambda: actions[action](periodic_id), f"{periodic_id}: {action} done", f"scheduler.{action}", periodic_id)
    return redirect(url_for("dashboard.scheduler_page"))


@dashboard_bp.app_template_filter("when")
def _when(epoch: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch else "-"


def register_dashboard(app: Flask) -> None:
    app.register_blueprint(dashboard_bp)
    # Flask's own signed cookie carries only flash messages now (never a token).
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_SECURE=get_settings().session_cookie_secure)
