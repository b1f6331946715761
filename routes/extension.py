"""The Flask extension a host app uses to mount Fikiri Jobs.

```python
from flask import Flask
from routes.extension import FikiriJobs

app = Flask(__name__)
app.config["JOBS_ADMIN_TOKEN"] = "..."      # any setting of core/config.py; app.config wins
jobs = FikiriJobs(app)                      # or: jobs = FikiriJobs(); jobs.init_app(app)
```

It mounts the parts that are switched on (all by default), each under its own prefix:

| part | setting to switch off | prefix setting | default |
| --- | --- | --- | --- |
| the jobs API | ``JOBS_MOUNT_API`` | ``JOBS_API_PREFIX`` | ``/api/jobs`` |
| scheduler, schedules and monitor routes | ``JOBS_MOUNT_OPS`` | ``JOBS_OPS_PREFIX`` | the API's prefix |
| Prometheus metrics (the ``[metrics]`` extra; 501 without it) | ``JOBS_MOUNT_METRICS`` | ``JOBS_METRICS_PATH`` | ``/metrics`` |
| the dashboard | ``JOBS_MOUNT_DASHBOARD`` | ``JOBS_DASHBOARD_PREFIX`` | ``/dashboard`` |

Settings are read from ``app.config`` first, then the environment, when ``init_app`` runs (the
worker and scheduler processes read the environment). Request bodies under the mounted
prefixes are limited to ``JOBS_MAX_BODY_BYTES`` (413 in the JSON envelope) without changing the
host's own limit, and unknown paths or methods under them answer in the envelope too. The
``flask jobs ...`` command group carries the operator CLI plus ``worker`` and ``scheduler``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click
from flask import Blueprint, Flask, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.config import Settings, set_overrides
from core.platform.connection import reset_connections
from routes.common import _HTTP_CODES, error, install_error_handlers

logger = logging.getLogger(__name__)

EXTENSION_KEY = "fikiri_jobs"


class FikiriJobs:
    """Mounts Fikiri Jobs on a Flask app. Keyword arguments override the settings of the same
    meaning (``api=False`` is ``JOBS_MOUNT_API=0``, ``api_prefix="/jobs"`` is ``JOBS_API_PREFIX``)."""

    _OPTION_SETTINGS = {
        "api": "JOBS_MOUNT_API", "ops": "JOBS_MOUNT_OPS", "metrics": "JOBS_MOUNT_METRICS",
        "dashboard": "JOBS_MOUNT_DASHBOARD", "api_prefix": "JOBS_API_PREFIX", "ops_prefix": "JOBS_OPS_PREFIX",
        "metrics_path": "JOBS_METRICS_PATH", "dashboard_prefix": "JOBS_DASHBOARD_PREFIX",
        "max_body_bytes": "JOBS_MAX_BODY_BYTES",
    }

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        unknown = set(options) - set(self._OPTION_SETTINGS)
        if unknown:
            raise TypeError(f"unknown FikiriJobs option(s): {', '.join(sorted(unknown))}; "
                            f"accepted: {', '.join(self._OPTION_SETTINGS)}")
        self.options = options
        self.settings: Settings | None = None
        self.mounted: dict[str, str] = {}
        if app is not None:
            self.init_app(app)

    # --- mounting ------------------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Read the settings (app.config, then environment) and mount the parts switched on."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("Fikiri Jobs is already mounted on this app; call init_app once per app")
        values: dict[str, object] = dict(app.config)
        for option, name in self._OPTION_SETTINGS.items():
            if option in self.options:
                values[name] = self.options[option]
        settings = set_overrides(values)
        reset_connections()
        self.settings = settings
        app.extensions[EXTENSION_KEY] = self

        from routes.dashboard import dashboard_bp, register_dashboard
        from routes.events import events_bp
        from routes.jobs import jobs_bp
        from routes.ops import ops_bp, prometheus_missing
        from routes.schedules import schedules_bp
        from routes.webhooks import webhooks_bp

        self.mounted = {}
        if settings.mount_api:
            app.register_blueprint(jobs_bp, url_prefix=settings.api_prefix)
            # live events and webhooks share the API's prefix; /events and /webhooks win over
            # /<job_id> because Werkzeug matches static segments first (see routes/events.py)
            app.register_blueprint(events_bp, url_prefix=settings.api_prefix)
            app.register_blueprint(webhooks_bp, url_prefix=settings.api_prefix)
            self.mounted["api"] = settings.api_prefix
        if settings.mount_ops:
            app.register_blueprint(ops_bp, url_prefix=settings.ops_prefix)
            app.register_blueprint(schedules_bp, url_prefix=settings.ops_prefix)
            self.mounted["ops"] = settings.ops_prefix
        if settings.mount_metrics:
            app.register_blueprint(_metrics_blueprint(settings.metrics_path))
            self.mounted["metrics"] = settings.metrics_path
            missing = prometheus_missing()
            if missing is not None:  # mounted all the same: scrapers get the 501 that says why
                logger.warning("%s answers 501: %s", settings.metrics_path, missing)
        if settings.mount_dashboard:
            # register_dashboard also sets what the dashboard needs of the app; it mounts the
            # blueprint at the blueprint's own prefix, so point that at ours for the call.
            default_prefix = dashboard_bp.url_prefix
            dashboard_bp.url_prefix = settings.dashboard_prefix
            try:
                register_dashboard(app)
            finally:
                dashboard_bp.url_prefix = default_prefix
            self.mounted["dashboard"] = settings.dashboard_prefix

        prefixes = sorted({p for part, p in self.mounted.items() if part in ("api", "ops")})
        _limit_bodies(app, tuple(self.mounted.values()), settings.max_body_bytes)
        for prefix in prefixes:
            _json_errors_under_prefix(app, prefix, self.mounted.get("api", prefix))
        app.cli.add_command(_cli_group())
        if not settings.admin_token and not settings.insecure_dev:
            logger.warning("JOBS_ADMIN_TOKEN is not set: the jobs API refuses every request "
                           "(set it, or JOBS_INSECURE_DEV=1 for local development only)")
        logger.info("Fikiri Jobs mounted: %s", ", ".join(f"{k} at {v}" for k, v in self.mounted.items()) or "nothing")

    def openapi_document(self) -> dict[str, Any]:
        """The OpenAPI document of exactly the mounted API, ops and metrics routes, at their paths."""
        from routes.openapi import openapi_document

        return openapi_document(api_prefix=self.mounted.get("api"), ops_prefix=self.mounted.get("ops"),
                                metrics_path=self.mounted.get("metrics"))


def _metrics_blueprint(path: str) -> Blueprint:
    """``/metrics`` at the configured path (a blueprint of its own so the path is free)."""
    from routes.ops import metrics

    bp = Blueprint("fikiri_metrics", __name__)
    install_error_handlers(bp)
    bp.add_url_rule(path, "metrics", metrics, methods=["GET"])
    return bp


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _limit_bodies(app: Flask, prefixes: tuple[str, ...], limit: int) -> None:
    """Our routes accept bodies up to ``limit`` bytes whatever the host's MAX_CONTENT_LENGTH."""

    def limit_body() -> None:
        if not any(_under(request.path, p) for p in prefixes):
            return
        request.max_content_length = limit
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge(
                f"the body is {request.content_length} bytes; at most {limit} are accepted (JOBS_MAX_BODY_BYTES)")

    app.before_request(limit_body)


def _json_errors_under_prefix(app: Flask, prefix: str, docs_prefix: str) -> None:
    """Routing errors (unknown path, wrong method, too large) never reach a blueprint's handlers;
    answer them with the JSON envelope under ``prefix`` and hand the host's other paths to the
    handler the host registered before us (or Flask's default page)."""
    for status in (404, 405, 413):
        previous: Callable | None = next(iter(app.error_handler_spec.get(None, {}).get(status, {}).values()), None)

        def handle(exc: HTTPException, previous: Callable | None = previous):
            if not _under(request.path, prefix):
                return previous(exc) if previous is not None else exc
            status = exc.code or 500
            message = exc.description or exc.name
            if status == 404:
                message = f"no endpoint {request.method} {request.path}; see {docs_prefix}/openapi.json"
            elif status == 405:
                allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
                message = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
            response, _ = error(_HTTP_CODES.get(status, "error"), message, status)
            if status == 405 and getattr(exc, "valid_methods", None):
                response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            return response, status

        app.register_error_handler(status, handle)


def _cli_group() -> click.Group:
    """``flask jobs ...``: the operator CLI of scripts/jobs.py plus ``worker`` and ``scheduler``."""
    from scripts.jobs import cli

    group = click.Group("jobs", help="Fikiri Jobs: queues, jobs, workers and the scheduler.",
                        params=list(cli.params), callback=cli.callback, commands=dict(cli.commands))

    passthrough = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}

    @group.command("worker", context_settings=passthrough, add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def worker(args: tuple[str, ...]) -> None:
        """Run a worker (same arguments as fikiri-worker; --help for them)."""
        from scripts.rq_worker import main

        sys.exit(main(list(args)))

    operator_scheduler = cli.commands["scheduler"]
    assert isinstance(operator_scheduler, click.Group)
    scheduler = click.Group("scheduler", help=operator_scheduler.help, commands=dict(operator_scheduler.commands))
    group.add_command(scheduler)

    @scheduler.command("run", context_settings=passthrough, add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def scheduler_run(args: tuple[str, ...]) -> None:
        """Run the periodic scheduler (same arguments as fikiri-scheduler)."""
        from scripts.periodic_scheduler import main

        sys.exit(main(list(args)))

    return group
