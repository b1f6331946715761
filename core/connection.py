"""Redis connections and a cached, never-hanging health check.

Web handlers ask :func:`redis_available` before every enqueue. The answer is cached for
``JOBS_HEALTH_CHECK_INTERVAL`` seconds and a PING waits at most ``JOBS_HEALTH_CHECK_TIMEOUT``,
so a dead Redis costs a request a fraction of a millisecond, not a socket timeout.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from core.config import get_settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_url: str | None = None
_probe: redis.Redis | None = None


def get_redis() -> redis.Redis:
    """The process-wide client for request-path calls (short timeouts, shared pool)."""
    global _client, _client_url, _probe
    settings = get_settings()
    with _lock:
        if _client is None or _client_url != settings.redis_url:
            _client = redis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=settings.redis_socket_timeout,
                socket_timeout=settings.redis_socket_timeout,
                health_check_interval=30,
            )
            _probe = redis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=settings.health_check_timeout,
                socket_timeout=settings.health_check_timeout,
            )
            _client_url = settings.redis_url
            _health.reset()
        return _client


def new_redis(socket_timeout: float | None = None) -> redis.Redis:
    """A dedicated client (workers, the scheduler): RQ adjusts its socket timeout itself."""
    settings = get_settings()
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout,
        socket_timeout=socket_timeout,
    )


class _HealthCache:
    """Remembers the last PING result for a short interval."""

    def __init__(self) -> None:
        self._checked_at = 0.0
        self._ok = False
        self._lock = threading.Lock()

    def reset(self) -> None:
        self._checked_at = 0.0

    def mark_down(self) -> None:
        """Called when a real command failed: trust that until the next check is due."""
        with self._lock:
            if self._ok:
                logger.warning("Redis unreachable: new jobs go to the in-process fallback")
            self._ok = False
            self._checked_at = time.monotonic()

    def check(self) -> bool:
        interval = get_settings().health_check_interval
        now = time.monotonic()
        if self._checked_at and now - self._checked_at < interval:
            return self._ok
        with self._lock:
            if self._checked_at and time.monotonic() - self._checked_at < interval:
                return self._ok
            get_redis()
            assert _probe is not None
            try:
                ok = bool(_probe.ping())
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                ok = False
            if ok != self._ok:
                logger.log(
                    logging.INFO if ok else logging.WARNING,
                    "Redis is %s", "reachable again" if ok else "unreachable: using the in-process fallback",
                )
            self._ok = ok
            self._checked_at = time.monotonic()
            return ok


_health = _HealthCache()


def redis_available() -> bool:
    """True if Redis answered a PING recently (cached; never blocks longer than one short PING)."""
    return _health.check()


def mark_redis_down() -> None:
    """Record that a command just failed with a connection error."""
    _health.mark_down()


def reset_connections() -> None:
    """Drop cached clients and health state (tests that restart Redis on another port)."""
    global _client, _client_url, _probe
    with _lock:
        _client = None
        _client_url = None
        _probe = None
    _health.reset()
