"""The Flask app serving Fikiri Jobs: ``gunicorn 'app:create_app()'``.

A host application mounts the same blueprints into its own app instead (see
:func:`register_jobs`); this factory is what the demo, the tests and a standalone deployment run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from core.config import get_settings
from routes.common import _HTTP_CODES, error
from routes.dashboard import register_dashboard
from routes.jobs import jobs_bp
from routes.ops import register_ops

logger = logging.getLogger(__name__)

API_PREFIX = "/api/jobs"
MAX_BODY_BYTES = 256 * 1024


def _json_errors_under_prefix(app: Flask, prefix: str) -> None:
    """Routing errors (unknown path, wrong method) never reach a blueprint's handlers; answer
    them with the JSON envelope under ``prefix`` and leave the host app's other paths alone."""

    def handle(exc: HTTPException):
        if request.path == prefix or request.path.startswith(prefix + "/"):
            status = exc.code or 500
            message = exc.description or exc.name
            if status == 404:
                message = f"no endpoint {request.method} {request.path}; see {prefix}/openapi.json"
            elif status == 405:
                allowed = ", ".join(sorted(exc.valid_methods or [])) if hasattr(exc, "valid_methods") else ""
                message = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
            response, _ = error(_HTTP_CODES.get(status, "error"), message, status)
            if status == 405 and getattr(exc, "valid_methods", None):
                response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            return response, status
        return exc

    for status in (404, 405, 413):
        app.register_error_handler(status, handle)


def register_jobs(app: Flask) -> None:
    """Mount the /api/jobs blueprint and its JSON error handling on ``app``."""
    app.register_blueprint(jobs_bp)
    _json_errors_under_prefix(app, API_PREFIX)


# Further blueprints: operator endpoints and /metrics (and the dashboard, when present).
EXTRA_REGISTRARS: list[Callable[[Flask], None]] = [register_ops, register_dashboard]


def create_app() -> Flask:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["JSON_SORT_KEYS"] = False
    if settings.secret_key:
        app.config["SECRET_KEY"] = settings.secret_key
    register_jobs(app)
    for register in EXTRA_REGISTRARS:
        register(app)
    if not settings.admin_token and not settings.insecure_dev:
        logger.warning("JOBS_ADMIN_TOKEN is not set: the jobs API refuses every request "
                       "(set it, or JOBS_INSECURE_DEV=1 for local development only)")
    return app
