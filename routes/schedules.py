"""Admin endpoints for the host app's own schedules, mounted beside the ops routes.

``GET /schedules`` lists every schedule (built-in and host, with ``owner``); ``POST /schedules``
registers or updates a host schedule; ``GET``/``DELETE /schedules/<name>`` read or remove one.
Built-in schedules are listed but never changed here (pause, resume and run them through
``/scheduler/<id>/...``), so a host action cannot touch them.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from core.errors import JobNotFoundError
from core.ops import audit
from core.schedule import periodic
from core.schedule.spec import HOST, check_name, schedule_id
from routes.common import install_error_handlers, ok, require_admin
from routes.params import ParamError, json_body

logger = logging.getLogger(__name__)

schedules_bp = Blueprint("jobs_schedules", __name__, url_prefix="/api/jobs")
install_error_handlers(schedules_bp)

# Body fields of POST /schedules and the register_periodic argument each one is.
BODY_FIELDS = ("name", "task", "cron", "interval", "every", "tz", "payload", "queue", "overlap", "missed")
REQUIRED_FIELDS = ("name", "task")


def _registration(body: dict[str, Any]) -> dict[str, Any]:
    """The body as register_periodic's arguments; unknown or missing fields are a 400."""
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise ParamError(f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown[:5])}; "
                         f"accepted: {', '.join(BODY_FIELDS)}")
    missing = [f for f in REQUIRED_FIELDS if body.get(f) is None]
    if missing:
        raise ParamError(f"missing field(s) {', '.join(missing)}; a schedule needs name, task and cron or interval")
    return {key: value for key, value in body.items() if value is not None}


def _host_entry(name: str) -> dict[str, Any]:
    periodic_id = schedule_id(name)
    for entry in periodic.list_periodic():
        if entry["id"] == periodic_id and entry["owner"] == HOST:
            return entry
    known = ", ".join(periodic.host_schedule_names()) or "none"
    raise JobNotFoundError(f"no host schedule {name!r}; host schedules: {known}")


@schedules_bp.get("/schedules")
@require_admin
def schedules_list():
    return ok({"schedules": periodic.list_periodic()})


@schedules_bp.post("/schedules")
@require_admin
def schedules_add():
    """Register or update a host schedule: 201 when it is new, 200 when it existed."""
    arguments = _registration(json_body())
    name, task = arguments.pop("name"), arguments.pop("task")
    existed = check_name(name) in periodic.host_schedule_names()
    entry = periodic.register_periodic(name, task, **arguments)
    audit.record("admin", "schedules.update" if existed else "schedules.add", entry["id"], "api",
                 detail=f"{entry['task']} {entry['trigger']}")
    return ok(entry, 200 if existed else 201)


@schedules_bp.get("/schedules/<name>")
@require_admin
def schedules_show(name: str):
    return ok(_host_entry(check_name(name)))


@schedules_bp.delete("/schedules/<name>")
@require_admin
def schedules_remove(name: str):
    periodic.unregister_periodic(check_name(name))
    audit.record("admin", "schedules.remove", schedule_id(name), "api")
    return ok({"name": name, "removed": True})
