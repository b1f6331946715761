"""The OpenAPI 3 document of the /api/jobs blueprint (kept true by tests/test_api_openapi.py)."""

from __future__ import annotations

from typing import Any

from core.config import QUEUE_NAMES, get_settings
from core.platform.keys import PRIORITIES

_JOB_STATUSES = ["pending", "delayed", "running", "completed", "failed", "retrying", "canceled", "expired"]


def _ok(data_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"type": "boolean", "enum": [True]}, "data": data_schema},
    }


def _response(description: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ok(data_schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {400: "bad input", 401: "missing or invalid token", 403: "not allowed for this token",
             404: "not found", 409: "not possible in the job's state", 413: "body too large",
             415: "body is not JSON", 503: "Redis unreachable or API not configured"}
    return {str(s): {"description": names[s], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}} for s in statuses}


_JOB_ID = {"name": "job_id", "in": "path", "required": True,  # RQ 3's rule (core/queue/job_options.py)
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}}


def _queue_param() -> dict:
    """``email`` or its full name (``fikiri:email`` under the default JOBS_QUEUE_PREFIX)."""
    settings = get_settings()
    names = [*QUEUE_NAMES, *(settings.full_queue_name(q) for q in QUEUE_NAMES)]
    return {"name": "queue_name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
_LIMIT = {"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}
_JOB = {"$ref": "#/components/schemas/Job"}
_GROUP = {"name": "group", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
_GROUP_CONTROL = {"type": "object", "properties": {"queue": {"type": "string"}, "group": {"type": "string"},
                                                   "paused": {"type": "boolean"}, "changed": {"type": "boolean"}}}
_STATS = {"$ref": "#/components/schemas/QueueStats"}
_AUTH = [{"bearerAuth": []}]

_FAILED_FILTER = {  # core/api/dead_letters.py: every filter given must hold
    "queue": {"type": "string", "description": "email, ai or crm (or the full name)"},
    "task": {"type": "string", "description": "the task name"},
    "error": {"type": "string", "maxLength": 200, "description": "a substring of the error text"},
    "user_id": {"type": "string", "description": "the job's user"},
    "since": {"type": "string", "description": "failed at or after: ISO 8601 (no zone: UTC) or epoch seconds"},
    "until": {"type": "string", "description": "failed at or before: ISO 8601 (no zone: UTC) or epoch seconds"},
}
_FAILED_FILTER_PARAMS = [{"name": name, "in": "query", "required": False, "schema": schema}
                         for name, schema in _FAILED_FILTER.items()]


def _failed_bulk(verb: str) -> dict[str, Any]:
    body = {"type": "object", "additionalProperties": False, "properties": {
        **_FAILED_FILTER, "since": {"oneOf": [_FAILED_FILTER["since"], {"type": "number"}]},
        "until": {"oneOf": [_FAILED_FILTER["until"], {"type": "number"}]},
        "dry_run": {"type": "boolean", "default": False, "description": "true: only count the matching jobs"}}}
    return {"post": {
        "summary": f"Failed jobs matching every filter given {'requeued' if verb == 'retried' else 'deleted'}; "
                   f"one audit entry per real run (admin)",
        "security": _AUTH,
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"200": _response("how many matched and how many were " + verb, {
            "type": "object", "required": ["matched", verb], "properties": {
                "matched": {"type": "integer"}, verb: {"type": "integer"}, "dry_run": {"type": "boolean"},
                "filter": {"type": "object"}, "scanned": {"type": "integer"}, "complete": {"type": "boolean"}}}),
            **_errors(400, 401, 403, 415, 503)}}}
_PERIODIC_ID = {"name": "periodic_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PERIODIC = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "task": {"type": "string"}, "queue": {"type": "string"},
    "trigger": {"type": "string"}, "next_run": {"type": "number", "nullable": True},
    "paused": {"type": "boolean"}, "last_run": {"type": "number", "nullable": True}}}
_SCHEDULE_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"}
_SCHEDULE = {"type": "object", "required": ["id", "name", "task", "queue", "owner", "trigger"], "properties": {
    **_PERIODIC["properties"], "owner": {"type": "string", "enum": ["builtin", "host"]},
    "kwargs": {"type": "object"}, "cron": {"type": "string", "nullable": True},
    "interval": {"type": "integer", "nullable": True}, "tz": {"type": "string"},
    "overlap": {"type": "string", "enum": ["skip", "queue"]},
    "missed": {"type": "string", "enum": ["run_once", "skip"]}, "registered": {"type": "boolean"}}}
_INTERVAL = {"type": "integer", "minimum": 1, "maximum": 366 * 86_400}
_SCHEDULE_BODY = {"type": "object", "required": ["name", "task"], "additionalProperties": False, "properties": {
    "name": {**_SCHEDULE_NAME, "description": "stored as periodic-<name>; a built-in's name is refused"},
    "task": {"type": "string", "minLength": 1, "maxLength": 128, "description": "a registered task"},
    "cron": {"type": "string", "maxLength": 200,
             "description": "5 fields 'minute hour day-of-month month day-of-week' in tz; or give interval"},
    "interval": {**_INTERVAL, "description": "seconds between runs; or give cron"},
    "every": {**_INTERVAL, "description": "the same as interval"},
    "tz": {"type": "string", "maxLength": 64, "default": "UTC", "description": "IANA zone of the cron times"},
    "payload": {"type": "object", "description": "the task's keyword arguments"},
    "queue": {"type": "string", "description": "only when the task is registered on several queues"},
    "overlap": {"type": "string", "enum": ["skip", "queue"], "default": "skip"},
    "missed": {"type": "string", "enum": ["run_once", "skip"], "default": "run_once"}}}
# Required with the admin token (whose jobs run for the named user), ignored with a user token.
_USER_ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_.@+:-]{1,128}$",
                   "description": "required with the admin token; a user token always acts for its own user"}


# these paths belong to the ops blueprints (routes/ops.py, routes/schedules.py)
_OPS_SUFFIXES = ("/scheduler", "/monitor", "/schedules")


def openapi_document(api_prefix: str | None = "/api/jobs", ops_prefix: str | None = "/api/jobs",
                     metrics_path: str | None = None) -> dict[str, Any]:
    """The document for the API mounted at ``api_prefix``, the ops routes at ``ops_prefix`` and
    Prometheus metrics at ``metrics_path`` (None: that part is not mounted, so it is left out)."""
    document = _document()
    document["paths"].update(_live_paths())
    paths = {}
    for path, operations in document["paths"].items():
        suffix = path.removeprefix("/api/jobs")
        prefix = ops_prefix if suffix.startswith(_OPS_SUFFIXES) else api_prefix
        if prefix is not None:
            paths[prefix + suffix] = operations
    if metrics_path is not None:
        paths[metrics_path] = {"get": {
            "summary": "Prometheus metrics (admin)", "security": _AUTH,
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors(401, 403)}}}
    document["paths"] = paths
    return document


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Fikiri Jobs API", "version": "1.0.0",
                 "description": "Poll background jobs, read queue health, start work. "
                                "Send 'Authorization: Bearer <token>' (admin token or a user token)."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["success", "error"], "properties": {
                    "success": {"type": "boolean", "enum": [False]},
                    "error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Job": {"type": "object", "required": ["job_id", "status", "queue", "task_name", "mode"],
                        "properties": {
                            "job_id": {"type": "string"}, "status": {"type": "string", "enum": _JOB_STATUSES},
                            "queue": {"type": "string"}, "task_name": {"type": "string"},
                            "payload": {"type": "object"}, "result": {}, "error": {"type": "string", "nullable": True},
                            "retry_count": {"type": "integer"}, "max_retries": {"type": "integer"}, "progress": {},
                            "user_id": {"type": "string", "nullable": True},
                            "created_at": {"type": "number", "nullable": True},
                            "started_at": {"type": "number", "nullable": True},
                            "completed_at": {"type": "number", "nullable": True},
                            "mode": {"type": "string", "enum": ["redis", "fallback"]},
                            "priority": {"type": "string", "enum": list(PRIORITIES)},
                            "reason": {"type": "string", "nullable": True,
                                       "description": "why a delayed job waits (a rate or concurrency limit, a "
                                                      "Retry-After), or that a running job is being stopped"},
                            "deferrals": {"type": "integer"},
                            "stalls": {"type": "integer",
                                       "description": "attempts lost to a crash (worker killed, lease expired); "
                                                      "they use no retry, and past the task's max_stalls the "
                                                      "next one fails the job"},
                            "batch_id": {"type": "string", "nullable": True},
                            "group": {"type": "string", "nullable": True,
                                      "description": "its job group (group=, e.g. the user id): jobs of one "
                                                     "queue and priority are served round-robin across groups"},
                            "expires_at": {"type": "number", "nullable": True,
                                           "description": "not started by then (epoch s), it ends expired"},
                            "retry_policy": {"type": "object", "nullable": True,
                                             "description": "how a failure waits and which failures retry: "
                                                            "backoff [base, cap] or delays [...], jitter "
                                                            "(full | none), retry_on, dont_retry_on"}}},
                "QueueStats": {"type": "object", "required": ["queue", "stats"], "properties": {
                    "queue": {"type": "string"},
                    "stats": {"type": "object", "properties": {
                        "paused": {"type": "boolean"},
                        "latency_seconds": {"type": "number", "minimum": 0,
                                            "description": "age of the oldest job waiting to run (0: none)"},
                        "latency_by_priority": {"type": "object", "additionalProperties": {"type": "number"}},
                        "top_groups": {"type": "array", "items": {"type": "object"},
                                       "description": "the job groups with the most jobs waiting"}},
                              "additionalProperties": {"type": "integer"}}}},
                "QueueControl": {"type": "object", "required": ["queue", "paused", "changed"], "properties": {
                    "queue": {"type": "string"}, "paused": {"type": "boolean"}, "changed": {"type": "boolean"}}},
            },
        },
        "paths": {
            "/api/jobs/{job_id}": {"get": {
                "summary": "A job's status", "security": _AUTH, "parameters": [_JOB_ID],
                "responses": {"200": _response("the job", _JOB), **_errors(400, 401, 404, 503)}}},
            "/api/jobs/{job_id}/cancel": {"post": {
                "summary": "Cancel a pending or delayed job", "security": _AUTH, "parameters": [_JOB_ID],
                "responses": {"200": _response("the job after the change", _JOB), **_errors(400, 401, 404, 409, 503)}}},
            "/api/jobs/{job_id}/stop": {"post": {
                "summary": "Stop a job (owner or admin): a running one is ended by its worker (202, still running "
                           "until then), a pending or delayed one is canceled (200); it ends canceled, not retried",
                "security": _AUTH, "parameters": [_JOB_ID],
                "responses": {"200": _response("the job, canceled", _JOB), "202": _response("the job, stopping", _JOB),
                              **_errors(400, 401, 404, 409, 503)}}},
            "/api/jobs/batch/{batch_id}": {"get": {
                "summary": "A batch's progress (owner or admin)", "security": _AUTH,
                "parameters": [{"name": "batch_id", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}}],
                "responses": {"200": _response("the batch", {"type": "object", "required": [
                    "batch_id", "total", "completed", "failed", "canceled", "pending", "done"], "properties": {
                    "batch_id": {"type": "string"}, "task": {"type": "string"}, "queue": {"type": "string"},
                    "user_id": {"type": "string", "nullable": True}, "total": {"type": "integer"},
                    "completed": {"type": "integer"}, "failed": {"type": "integer"},
                    "canceled": {"type": "integer"}, "pending": {"type": "integer"}, "done": {"type": "boolean"},
                    "callback_job_id": {"type": "string", "nullable": True},
                    "created_at": {"type": "string", "nullable": True},
                    "ended_at": {"type": "string", "nullable": True}}}),
                    **_errors(400, 401, 404, 503)}}},
            "/api/jobs/queue/{queue_name}/pause": {"post": {
                "summary": "Pause a queue (admin): workers take no new jobs from it; running ones finish",
                "security": _AUTH, "parameters": [_queue_param()],
                "responses": {"200": _response("the queue's state", {"$ref": "#/components/schemas/QueueControl"}),
                              **_errors(401, 403, 404, 503)}}},
            "/api/jobs/queue/{queue_name}/resume": {"post": {
                "summary": "Resume a paused queue (admin)", "security": _AUTH, "parameters": [_queue_param()],
                "responses": {"200": _response("the queue's state", {"$ref": "#/components/schemas/QueueControl"}),
                              **_errors(401, 403, 404, 503)}}},
            "/api/jobs/{job_id}/retry": {"post": {
                "summary": "Requeue a failed job (admin)", "security": _AUTH, "parameters": [_JOB_ID],
                "responses": {"200": _response("the job after the change", _JOB),
                              **_errors(400, 401, 403, 404, 409, 503)}}},
            "/api/jobs/queue/{queue_name}/stats": {"get": {
                "summary": "One queue's counts (admin)", "security": _AUTH, "parameters": [_queue_param()],
                "responses": {"200": _response("the counts", _STATS), **_errors(401, 403, 404, 503)}}},
            "/api/jobs/queue/{queue_name}/groups": {"get": {
                "summary": "The queue's job groups, largest backlog first, paged (admin)", "security": _AUTH,
                "parameters": [_queue_param(), _LIMIT, {
                    "name": "page", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100000}}],
                "responses": {"200": _response("one page of groups", {"type": "object", "properties": {
                    "queue": {"type": "string"}, "page": {"type": "integer"}, "limit": {"type": "integer"},
                    "total": {"type": "integer"}, "groups": {"type": "array", "items": {"type": "object", "properties": {
                        "group": {"type": "string"}, "waiting": {"type": "integer"}, "running": {"type": "integer"},
                        "oldest_age": {"type": "number"}, "weight": {"type": "number"},
                        "paused": {"type": "boolean"}}}}}}),
                    **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/queue/{queue_name}/groups/{group}/pause": {"post": {
                "summary": "Hold one job group of the queue (admin); the other groups go on", "security": _AUTH,
                "parameters": [_queue_param(), _GROUP],
                "responses": {"200": _response("the group's state", _GROUP_CONTROL), **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/queue/{queue_name}/groups/{group}/resume": {"post": {
                "summary": "Let a paused job group run again (admin)", "security": _AUTH,
                "parameters": [_queue_param(), _GROUP],
                "responses": {"200": _response("the group's state", _GROUP_CONTROL), **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/queue/{queue_name}/groups/{group}/weight": {"post": {
                "summary": "Set a job group's weight: its turns in the rotation per turn of a weight-1 group (admin)",
                "security": _AUTH, "parameters": [_queue_param(), _GROUP],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["weight"],
                    "properties": {"weight": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                                              "maximum": 1000}}}}}},
                "responses": {"200": _response("the weight set", {"type": "object", "properties": {
                    "queue": {"type": "string"}, "group": {"type": "string"}, "weight": {"type": "number"}}}),
                    **_errors(400, 401, 403, 404, 415, 503)}}},
            "/api/jobs/queues/stats": {"get": {
                "summary": "Every queue's counts (admin)", "security": _AUTH,
                "responses": {"200": _response("the counts", {"type": "array", "items": _STATS}),
                              **_errors(401, 403, 503)}}},
            "/api/jobs/queue/{queue_name}/failed": {"get": {
                "summary": "Failed jobs, newest first (admin)", "security": _AUTH, "parameters": [_queue_param(), _LIMIT],
                "responses": {"200": _response("the failed jobs", {"type": "object", "properties": {
                    "queue": {"type": "string"}, "jobs": {"type": "array", "items": _JOB}}}),
                    **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/failed": {"get": {
                "summary": "Failed jobs of every queue matching every filter given, newest failure first (admin)",
                "security": _AUTH, "parameters": [*_FAILED_FILTER_PARAMS, _LIMIT, {
                    "name": "page", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1}}],
                "responses": {"200": _response("a page of the matching failed jobs", {
                    "type": "object", "required": ["jobs", "total"], "properties": {
                        "jobs": {"type": "array", "items": _JOB}, "total": {"type": "integer"},
                        "page": {"type": "integer"}, "pages": {"type": "integer"}, "limit": {"type": "integer"},
                        "scanned": {"type": "integer"}, "complete": {"type": "boolean"},
                        "filter": {"type": "object"}}}),
                    **_errors(400, 401, 403, 503)}}},
            "/api/jobs/failed/retry": _failed_bulk("retried"),
            "/api/jobs/failed/delete": _failed_bulk("deleted"),
            "/api/jobs/user/{user_id}/recent": {"get": {
                "summary": "A user's newest jobs", "security": _AUTH,
                "parameters": [{"name": "user_id", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.@+:-]{1,128}$"}}, _LIMIT],
                "responses": {"200": _response("the jobs", {"type": "object", "properties": {
                    "user_id": {"type": "string"}, "jobs": {"type": "array", "items": _JOB}}}),
                    **_errors(400, 401, 403, 503)}}},
            "/api/jobs/sync/trigger": {"post": {
                "summary": "Start a Gmail sync for the caller (admin: for body.user_id)", "security": _AUTH,
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "sync_type": {"type": "string", "enum": ["manual", "incremental", "full"]},
                        "full_sync": {"type": "boolean", "description": "list every message in the window "
                                      "instead of Gmail's history since the last sync"},
                        "lookback_days": {"type": "integer", "minimum": 1, "maximum": 3650,
                                          "description": "full-sync window (default EMAIL_SYNC_LOOKBACK_DAYS, 90)"},
                        "user_id": _USER_ID_SCHEMA}}}}},
                "responses": {"202": _response("queued", {"type": "object", "properties": {
                    "job_id": {"type": "string"}}}), **_errors(400, 401, 413, 415, 503)}}},
            "/api/jobs/ai/trigger": {"post": {
                "summary": "Run an AI request for the caller (admin: for body.user_id)", "security": _AUTH,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["prompt"], "properties": {
                        "prompt": {"type": "string", "minLength": 1, "maxLength": 8000},
                        "user_id": _USER_ID_SCHEMA}}}}},
                "responses": {"202": _response("queued", {"type": "object", "properties": {
                    "job_id": {"type": "string"}}}), **_errors(400, 401, 413, 415, 503)}}},
            "/api/jobs/health": {"get": {
                "summary": "Redis reachable, mode; with the admin token, the fallback spool, (Redis up) "
                           "workers per queue and the paused queues, and whether a periodic scheduler ticks",
                "responses": {"200": _response("health", {"type": "object", "required": ["status", "redis", "mode"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded"]}, "redis": {"type": "boolean"},
                        "mode": {"type": "string", "enum": ["redis", "fallback"]},
                        "fallback_pending": {"type": "integer", "minimum": 0},
                        "fallback_oldest_age": {"type": "number", "nullable": True},
                        "workers": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "paused_queues": {"type": "array", "items": {"type": "string"}},
                        "scheduler_alive": {"type": "boolean"},
                        "scheduler_last_tick": {"type": "number", "nullable": True}}}),
                    **_errors(401, 503)}}},
            "/api/jobs/scheduler/status": {"get": {
                "summary": "Periodic jobs with trigger, next run, pause state (admin)", "security": _AUTH,
                "responses": {"200": _response("the periodic jobs", {"type": "object", "properties": {
                    "jobs": {"type": "array", "items": _PERIODIC}, "scheduled_total": {"type": "integer"}}}),
                    **_errors(401, 403, 503)}}},
            "/api/jobs/scheduler/{periodic_id}/pause": {"post": {
                "summary": "Pause a periodic job (admin)", "security": _AUTH, "parameters": [_PERIODIC_ID],
                "responses": {"200": _response("the periodic job", _PERIODIC), **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/scheduler/{periodic_id}/resume": {"post": {
                "summary": "Resume a periodic job (admin)", "security": _AUTH, "parameters": [_PERIODIC_ID],
                "responses": {"200": _response("the periodic job", _PERIODIC), **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/scheduler/{periodic_id}/run": {"post": {
                "summary": "Run a periodic job now (admin)", "security": _AUTH, "parameters": [_PERIODIC_ID],
                "responses": {"202": _response("queued", {"type": "object", "properties": {
                    "id": {"type": "string"}, "job_id": {"type": "string"}}}), **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/scheduler/{periodic_id}": {"delete": {
                "summary": "Unschedule a periodic job (admin): a built-in until the next registration, a host one for good", "security": _AUTH,
                "parameters": [_PERIODIC_ID],
                "responses": {"200": _response("removed", {"type": "object"}), **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/schedules": {
                "get": {"summary": "Every schedule, built-in and host, with owner and next run (admin)",
                        "security": _AUTH,
                        "responses": {"200": _response("the schedules", {"type": "object", "properties": {
                            "schedules": {"type": "array", "items": _SCHEDULE}}}), **_errors(401, 403, 503)}},
                "post": {"summary": "Register or update a host schedule (admin)", "security": _AUTH,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEDULE_BODY}}},
                         "responses": {"201": _response("registered", _SCHEDULE),
                                       "200": _response("updated (or unchanged)", _SCHEDULE),
                                       **_errors(400, 401, 403, 413, 415, 503)}}},
            "/api/jobs/schedules/{name}": {
                "get": {"summary": "One host schedule (admin)", "security": _AUTH,
                        "parameters": [{"name": "name", "in": "path", "required": True, "schema": _SCHEDULE_NAME}],
                        "responses": {"200": _response("the schedule", _SCHEDULE), **_errors(400, 401, 403, 404, 503)}},
                "delete": {"summary": "Remove a host schedule for good (admin); built-ins are not removed here",
                           "security": _AUTH,
                           "parameters": [{"name": "name", "in": "path", "required": True, "schema": _SCHEDULE_NAME}],
                           "responses": {"200": _response("removed", {"type": "object", "properties": {
                               "name": {"type": "string"}, "removed": {"type": "boolean"}}}),
                               **_errors(400, 401, 403, 404, 503)}}},
            "/api/jobs/monitor/stats": {"get": {
                "summary": "Task metrics (admin)", "security": _AUTH,
                "parameters": [{"name": "task", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _response("metrics per task", {"type": "object", "properties": {
                    "tasks": {"type": "object"}}}), **_errors(400, 401, 403, 503)}}},
            "/api/jobs/monitor/{task}/history": {"get": {
                "summary": "A task's newest executions (admin)", "security": _AUTH,
                "parameters": [{"name": "task", "in": "path", "required": True, "schema": {"type": "string"}},
                               _LIMIT],
                "responses": {"200": _response("executions", {"type": "object", "properties": {
                    "task": {"type": "string"}, "executions": {"type": "array", "items": {"type": "object"}}}}),
                    **_errors(400, 401, 403, 503)}}},
            "/api/jobs/monitor/failures": {"get": {
                "summary": "Recent failures across tasks (admin)", "security": _AUTH,
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                               {"name": "hours", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 720}}],
                "responses": {"200": _response("failures", {"type": "object", "properties": {
                    "failures": {"type": "array", "items": {"type": "object"}}}}),
                    **_errors(400, 401, 403, 503)}}},
            "/api/jobs/audit": {"get": {
                "summary": "Operator actions, newest first (admin)", "security": _AUTH,
                "parameters": [{"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
                "responses": {"200": _response("the audit log", {"type": "object", "properties": {
                    "entries": {"type": "array", "items": {"type": "object", "required": [
                        "who", "action", "target", "source", "at"], "properties": {
                        "id": {"type": "string"}, "who": {"type": "string"}, "action": {"type": "string"},
                        "target": {"type": "string"}, "source": {"type": "string", "enum": ["api", "cli", "dashboard"]},
                        "at": {"type": "number"}, "detail": {"type": "string"}}}}}}),
                    **_errors(400, 401, 403, 503)}}},
            "/api/jobs/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
    }


# --- live events (routes/events.py) and webhooks (routes/webhooks.py) ----------------------------
_EVENT_NAMES = ["enqueued", "delayed", "pending", "started", "parked", "released", "progress", "completed",
                "failed", "retrying", "deferred", "canceled", "stopping", "abandoned", "requeued", "deleted", "expired"]
_LAST_EVENT_ID = [
    {"name": "Last-Event-ID", "in": "header", "required": False,
     "description": "resume after this event (the 'id:' of the last message received)",
     "schema": {"type": "string", "pattern": "^[0-9]{1,20}(-[0-9]{1,20})?$"}},
    {"name": "last_event_id", "in": "query", "required": False,
     "description": "the same, for a first connection (the header wins)",
     "schema": {"type": "string", "pattern": "^[0-9]{1,20}(-[0-9]{1,20})?$"}}]
_SSE = {"description": "text/event-stream: a 'retry:' hint, then one message per event ('id:' = stream entry "
                       "id, 'data:' = the event as JSON: id, job_id, event, status, queue, task_name, user_id, at, "
                       "detail...), comment lines as heartbeats; the server ends it after "
                       "JOBS_EVENTS_STREAM_MAX_SECONDS",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}
_BUSY = {"description": "this process serves JOBS_EVENTS_MAX_STREAMS streams already (Retry-After), or Redis is "
                        "unreachable",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NAMES = {"type": "array", "nullable": True, "minItems": 1, "maxItems": 100,
          "items": {"type": "string", "pattern": "^[A-Za-z0-9_.:@+-]{1,128}$"}}
_WEBHOOK = {"type": "object", "required": ["id", "url", "secret", "created_at"], "properties": {
    "id": {"type": "string"}, "url": {"type": "string"},
    "secret": {"type": "string", "description": "the secret on registration; '...' and its last 4 characters after"},
    "tasks": {**_NAMES}, "users": {**_NAMES},
    "events": {"type": "array", "nullable": True, "items": {"type": "string", "enum": _EVENT_NAMES}},
    "created_at": {"type": "number"}}}
_WEBHOOK_BODY = {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
    "url": {"type": "string", "maxLength": 2048, "description": "absolute http:// or https:// URL"},
    "secret": {"type": "string", "nullable": True, "minLength": 16, "maxLength": 256,
               "description": "HMAC-SHA256 key; omitted or null: one is generated and returned once"},
    "tasks": {**_NAMES, "description": "only these tasks' events (null: every task)"},
    "users": {**_NAMES, "description": "only these users' jobs (null: everyone's)"},
    "events": {"type": "array", "nullable": True, "minItems": 1, "maxItems": 100,
               "items": {"type": "string", "enum": _EVENT_NAMES}, "description": "null: every event"}}}
_WEBHOOK_ID = {"name": "webhook_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}


def _live_paths() -> dict[str, Any]:
    return {
        "/api/jobs/{job_id}/events": {"get": {
            "summary": "A job's events as server-sent events (owner or admin), its current run replayed first",
            "security": _AUTH, "parameters": [_JOB_ID, *_LAST_EVENT_ID],
            "responses": {"200": _SSE, **_errors(400, 401, 404), "503": _BUSY}}},
        "/api/jobs/events": {"get": {
            "summary": "Every job's events from now on, as server-sent events (admin)", "security": _AUTH,
            "parameters": [
                *_LAST_EVENT_ID,
                {"name": "queue", "in": "query", "required": False, "schema": {"type": "string", "enum": list(QUEUE_NAMES)}},
                {"name": "task", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"}},
                {"name": "user", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.@+:-]{1,128}$"}}],
            "responses": {"200": _SSE, **_errors(400, 401, 403), "503": _BUSY}}},
        "/api/jobs/webhooks": {
            "get": {"summary": "Registered webhooks, secrets hidden (admin)", "security": _AUTH,
                    "responses": {"200": _response("the webhooks", {"type": "object", "properties": {
                        "webhooks": {"type": "array", "items": _WEBHOOK}}}), **_errors(401, 403, 503)}},
            "post": {"summary": "Register a webhook (admin); the answer holds its secret, shown only here",
                     "security": _AUTH,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _WEBHOOK_BODY}}},
                     "responses": {"201": _response("registered", _WEBHOOK),
                                   **_errors(400, 401, 403, 409, 413, 415, 503)}}},
        "/api/jobs/webhooks/{webhook_id}": {
            "get": {"summary": "One webhook, secret hidden (admin)", "security": _AUTH, "parameters": [_WEBHOOK_ID],
                    "responses": {"200": _response("the webhook", _WEBHOOK), **_errors(400, 401, 403, 404, 503)}},
            "delete": {"summary": "Remove a webhook and its attempts (admin)", "security": _AUTH,
                       "parameters": [_WEBHOOK_ID],
                       "responses": {"200": _response("removed", {"type": "object", "properties": {
                           "id": {"type": "string"}, "removed": {"type": "boolean"}}}),
                           **_errors(400, 401, 403, 404, 503)}}},
        "/api/jobs/webhooks/{webhook_id}/attempts": {"get": {
            "summary": "A webhook's delivery attempts, newest first (admin)", "security": _AUTH,
            "parameters": [_WEBHOOK_ID, {"name": "limit", "in": "query", "required": False,
                                         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}],
            "responses": {"200": _response("the attempts", {"type": "object", "properties": {
                "id": {"type": "string"}, "attempts": {"type": "array", "items": {"type": "object", "properties": {
                    "at": {"type": "number"}, "event": {"type": "string"}, "event_id": {"type": "string"},
                    "job_id": {"type": "string", "nullable": True},
                    "status": {"type": "integer", "nullable": True}, "error": {"type": "string", "nullable": True},
                    "duration_ms": {"type": "number"}, "outcome": {"type": "string"}}}}}}),
                **_errors(400, 401, 403, 404, 503)}}},
    }
