"""Outbound HTTP for tasks: timeouts always, back-off on 429 and 5xx, Retry-After without a held slot.

A 429 or 503 that carries ``Retry-After`` raises :class:`core.errors.RetryAfter`: inside a job
the worker reschedules it after that delay and serves other jobs meanwhile (a deferral, not a
failure). Other 429/5xx answers and connection errors are retried here with back-off.

Domain clients (Gmail, the AI provider, CRM webhooks) call :func:`request_with_backoff` so every
one of them treats a busy or flaky peer the same way.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from core.config import get_settings
from core.errors import RetryAfter

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class UpstreamError(RuntimeError):
    """The peer kept failing (or answered with an error we cannot retry)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def retry_after_seconds(response: requests.Response, fallback: float) -> float:
    """Seconds the peer asked us to wait (Retry-After as seconds or an HTTP date), else ``fallback``."""
    value = response.headers.get("Retry-After")
    if not value:
        return fallback
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return fallback


def request_with_backoff(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One HTTP call, retried on 429/5xx and connection errors; returns any other response."""
    settings = get_settings()
    kwargs.setdefault("timeout", settings.http_timeout)
    delay = 0.5
    for attempt in range(1, settings.http_max_attempts + 1):
        try:
            response = session.request(method, url, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == settings.http_max_attempts:
                raise UpstreamError(f"{method} {url} failed after {attempt} attempts: {exc}") from exc
            logger.warning("%s %s: %s; retry %d in %.1fs", method, url, exc, attempt, delay)
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            asked = response.headers.get("Retry-After")
            if asked and response.status_code in (429, 503):
                # the peer said when: wait without holding a worker slot (the job is rescheduled);
                # also on the last attempt, which has nothing to do with the peer's answer
                seconds = retry_after_seconds(response, delay)
                raise RetryAfter(seconds, f"{method} {url} answered {response.status_code} with Retry-After: {asked}")
            if attempt == settings.http_max_attempts:
                raise UpstreamError(
                    f"{method} {url} answered {response.status_code} after {attempt} attempts", response.status_code
                )
            delay = retry_after_seconds(response, delay)
            logger.warning("%s %s answered %d; retry %d in %.1fs", method, url, response.status_code, attempt, delay)
        time.sleep(min(delay, settings.http_backoff_cap))
        delay = min(delay * 2, settings.http_backoff_cap)
    raise AssertionError("unreachable")
