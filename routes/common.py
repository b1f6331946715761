"""What every Fikiri Jobs endpoint shares: the JSON envelope, error mapping, and auth guards.

Success: ``{"success": true, "data": ...}``. Error: ``{"success": false, "error": {"code",
"message"}}`` with the matching HTTP status. Blueprints call :func:`install_error_handlers` so
that no path under them ever answers with an HTML page or a 500 for bad input.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from core.errors import ForbiddenError, JobsError
from core.platform.auth import Identity, bearer_token, resolve_identity
from core.platform.connection import is_redis_down

logger = logging.getLogger(__name__)


def ok(data: Any, status: int = 200) -> tuple[Any, int]:
    return jsonify({"success": True, "data": data}), status


def error(code: str, message: str, status: int) -> tuple[Any, int]:
    return jsonify({"success": False, "error": {"code": code, "message": message}}), status


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable"}


def install_error_handlers(bp: Blueprint) -> None:
    """Map our errors and werkzeug's HTTP errors onto the envelope for routes of ``bp``."""

    @bp.errorhandler(JobsError)
    def _jobs_error(exc: JobsError):
        return error(exc.code, exc.message, exc.http_status)

    @bp.errorhandler(redis.RedisError)
    def _redis_error(exc: redis.RedisError):
        if is_redis_down(exc):
            logger.warning("Redis unreachable on %s %s: %s", request.method, request.path, exc)
            return error("unavailable", "Redis is unreachable; only jobs in the in-process fallback can be read", 503)
        logger.error("Redis answered an error on %s %s", request.method, request.path, exc_info=exc)
        return error("internal_error", f"Redis answered an error ({type(exc).__name__}); it has been logged", 500)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        return error(_HTTP_CODES.get(status, "error"), exc.description or exc.name, status)

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error("internal_error", "unexpected server error; it has been logged", 500)


def current_identity() -> Identity:
    """The caller of this request (resolved once per request)."""
    if "fikiri_identity" not in g:
        g.fikiri_identity = resolve_identity(bearer_token(request.headers.get("Authorization")))
    return g.fikiri_identity


def require_identity(view: Callable) -> Callable:
    """Any authenticated caller (admin or user)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        current_identity()
        return view(*args, **kwargs)

    return wrapper


def require_admin(view: Callable) -> Callable:
    """Only the admin token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        if not current_identity().is_admin:
            raise ForbiddenError("this endpoint needs the admin token")
        return view(*args, **kwargs)

    return wrapper
