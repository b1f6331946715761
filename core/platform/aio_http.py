"""Outbound HTTP for ``async def`` tasks: :func:`core.platform.http.request_with_backoff`'s rules,
awaited on the event loop (httpx's AsyncClient, the ``[aio]`` extra).

The same timeouts, back-off on 429/5xx and connection errors, and :class:`core.errors.RetryAfter`
for a 429/503 that says when (the worker reschedules the job, holding no slot meanwhile). A wait
between attempts is an ``asyncio.sleep``: the loop's other jobs run meanwhile, where the sync
client would hold its thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from core.config import get_settings
from core.errors import RetryAfter
from core.platform.http import RETRY_STATUSES, UpstreamError, retry_after_seconds

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


def async_client() -> httpx.AsyncClient:
    """A new ``httpx.AsyncClient`` (use it as ``async with``); a clear error without the extra."""
    try:
        import httpx
    except ImportError as exc:  # the plain install has no async HTTP client
        raise RuntimeError("async HTTP needs httpx: pip install 'fikiri-jobs[aio]'") from exc
    return httpx.AsyncClient()


async def arequest_with_backoff(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One HTTP call, retried on 429/5xx and connection errors; returns any other response."""
    import httpx

    settings = get_settings()
    kwargs.setdefault("timeout", settings.http_timeout)
    delay = 0.5
    for attempt in range(1, settings.http_max_attempts + 1):
        try:
            response = await client.request(method, url, **kwargs)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # a peer that is slow, unreachable or hung up; our own bad request (LocalProtocolError, a bad
            # URL) is raised at once: retrying cannot fix it
            if attempt == settings.http_max_attempts:
                raise UpstreamError(f"{method} {url} failed after {attempt} attempts: {exc!r}") from exc
            logger.warning("%s %s: %r; retry %d in %.1fs", method, url, exc, attempt, delay)
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            asked = response.headers.get("Retry-After")
            if asked and response.status_code in (429, 503):
                seconds = retry_after_seconds(response, delay)  # type: ignore[arg-type]  (reads .headers only)
                raise RetryAfter(seconds, f"{method} {url} answered {response.status_code} with Retry-After: {asked}")
            if attempt == settings.http_max_attempts:
                raise UpstreamError(
                    f"{method} {url} answered {response.status_code} after {attempt} attempts", response.status_code
                )
            delay = retry_after_seconds(response, delay)  # type: ignore[arg-type]
            logger.warning("%s %s answered %d; retry %d in %.1fs", method, url, response.status_code, attempt, delay)
        await asyncio.sleep(min(delay, settings.http_backoff_cap))
        delay = min(delay * 2, settings.http_backoff_cap)
    raise AssertionError("unreachable")
