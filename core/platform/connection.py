"""Redis connections and a cached, never-hanging health check.

Web handlers ask :func:`redis_available` before every enqueue. The answer is cached for
``JOBS_HEALTH_CHECK_INTERVAL`` seconds and a PING waits at most ``JOBS_HEALTH_CHECK_TIMEOUT``,
so a dead Redis costs a request a fraction of a millisecond, not a socket timeout.

Every client is built by :func:`build_redis`: a plain ``REDIS_URL`` (``rediss://`` for TLS, with
the ``REDIS_TLS_*`` files), or with ``REDIS_SENTINELS`` set, the current master of
``REDIS_SENTINEL_MASTER`` as the sentinels report it. A sentinel-managed client looks the master
up again after a connection error or a READONLY answer, so a failover needs no restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

try:  # redis-py >= 7: who we are in CLIENT SETINFO, named once (see _driver_kwargs)
    from redis.driver_info import DriverInfo
except ImportError:  # pragma: no cover - an older redis-py names itself the old way
    DriverInfo = None  # type: ignore[assignment,misc]

from core.config import Settings, get_settings
from core.errors import JobsError, JobsInternalError
from core.platform import keys
from core.platform.cluster import cluster_client, forget_masters

logger = logging.getLogger(__name__)

# The one rule for "Redis is down": what redis-py raises for a refused, reset or timed-out socket
# (BusyLoadingError, a restarting Redis loading its data, is a ConnectionError too). Nothing else
# sends a job to the fallback: not an OSError of our own (a missing script file once did), not a
# ResponseError (WRONGTYPE, OOM, a Lua error), not a bug. Every module catches these two names.
REDIS_DOWN: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
# ConnectionError subclasses that are a misconfiguration, not a lost connection: a wrong password
# stays wrong, and spooling would hide it. Catch these before REDIS_DOWN.
REDIS_MISCONFIGURED: tuple[type[Exception], ...] = (redis.exceptions.AuthenticationError,
                                                    redis.exceptions.AuthorizationError)


# Redis answers but refuses writes for a while: maxmemory reached under noeviction (OOM), or a node
# that became a replica in a failover (READONLY). Not "down": nothing is spooled for it, an enqueue
# sees it as an error; but a worker's loop, sweep, heartbeat and finish retry through it instead of
# dying (the fault campaign, bench.chaos, found a sweep's SET NX raising OOM out of the worker).
REDIS_REFUSING: tuple[type[Exception], ...] = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)


def is_redis_down(exc: BaseException) -> bool:
    """True only for a lost connection (see :data:`REDIS_DOWN`)."""
    return isinstance(exc, REDIS_DOWN) and not isinstance(exc, REDIS_MISCONFIGURED)


@contextmanager
def internal_errors(action: str) -> Iterator[None]:
    """Let a lost connection and our own :class:`JobsError` through; turn anything else into
    :class:`JobsInternalError` (HTTP 500), logged with its traceback. ``action`` names what failed
    ("enqueue of 'send_email'"), for the message the caller sees."""
    try:
        yield
    except JobsError:
        raise
    except Exception as exc:
        if is_redis_down(exc):
            raise
        logger.exception("%s failed on %s", action, redis_description())
        raise JobsInternalError(
            f"{action} failed inside the job layer ({type(exc).__name__}); it was not sent to the fallback "
            f"(that is only for an unreachable Redis), and the server log has the details") from exc


def redis_description(settings: Settings | None = None) -> str:
    """Which Redis, for log lines and exit messages: host, port and db, never a password."""
    settings = settings or get_settings()
    url = urlsplit(settings.redis_url)
    db = url.path.lstrip("/") or "0"
    if settings.redis_sentinels:
        return (f"master {settings.redis_sentinel_master!r} via sentinels "
                f"{','.join(f'{h}:{p}' for h, p in settings.redis_sentinels)} (db {db})")
    try:
        host, port = url.hostname or "127.0.0.1", url.port or 6379
    except ValueError:
        return f"the Redis of REDIS_URL (scheme {url.scheme!r}, unreadable host or port)"
    return f"{url.scheme}://{host}:{port}/{db}"

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_url: object = None
_probe: redis.Redis | None = None
_blocking: redis.Redis | None = None
_blocking_key: object = None
BLOCK_MAX = 30.0  # s: the longest one blocking read on get_blocking_redis() may ask for


def _tls_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.redis_url.startswith("rediss://"):
        return {}
    kwargs: dict[str, Any] = {"ssl_check_hostname": settings.redis_tls_check_hostname}
    if settings.redis_tls_ca_certs:
        kwargs["ssl_ca_certs"] = settings.redis_tls_ca_certs
    if settings.redis_tls_certfile:
        kwargs["ssl_certfile"] = settings.redis_tls_certfile
    if settings.redis_tls_keyfile:
        kwargs["ssl_keyfile"] = settings.redis_tls_keyfile
    return kwargs


def _driver_kwargs() -> dict[str, Any]:
    """redis-py reads its own version from the installed package's metadata (importlib.metadata,
    an email-format parse) for every new connection unless told: measured 2.7 ms of CPU per
    connection, most of a forked work-horse's start (each fork-class job opens one). Tell it once."""
    if DriverInfo is None:
        return {}
    return {"driver_info": _DRIVER_INFO}


_DRIVER_INFO = DriverInfo(name="redis-py", lib_version=redis.__version__) if DriverInfo is not None else None


def _connection_key(settings: Settings) -> tuple:
    return (settings.redis_url, settings.redis_cluster, settings.redis_sentinels, settings.redis_sentinel_master,
            settings.redis_sentinel_password, settings.redis_tls_ca_certs, settings.redis_tls_certfile)


def build_redis(socket_timeout: float | None, socket_connect_timeout: float | None,
                **extra: Any) -> redis.Redis:
    """A new client for the configured Redis: plain URL, TLS, or the master behind Sentinel."""
    settings = get_settings()
    kwargs: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout,
                              **_driver_kwargs(), **_tls_kwargs(settings), **extra}
    if settings.redis_cluster:
        return cluster_client(settings.redis_url, keys.cluster_tag(), settings.cluster_move_wait, **kwargs)
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    url = urlsplit(settings.redis_url)
    db_text = url.path.lstrip("/")
    db = int(db_text) if db_text.isascii() and db_text.isdigit() else 0
    if url.username:
        kwargs["username"] = unquote(url.username)
    if url.password:
        kwargs["password"] = unquote(url.password)
    if url.scheme == "rediss":
        kwargs["ssl"] = True
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": socket_timeout or settings.redis_socket_timeout,
                                       "socket_connect_timeout": socket_connect_timeout}
    if settings.redis_sentinel_password:
        sentinel_kwargs["password"] = settings.redis_sentinel_password
    if settings.redis_sentinel_username:
        sentinel_kwargs["username"] = settings.redis_sentinel_username
    sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(settings.redis_sentinel_master, redis_class=redis.Redis, db=db, **kwargs)


def get_redis() -> redis.Redis:
    """The process-wide client for request-path calls (short timeouts, shared pool)."""
    global _client, _client_url, _probe
    settings = get_settings()
    with _lock:
        key = _connection_key(settings)
        if _client is None or _client_url != key:
            _client = build_redis(settings.redis_socket_timeout, settings.redis_socket_timeout,
                                  health_check_interval=30)
            _probe = build_redis(settings.health_check_timeout, settings.health_check_timeout)
            _client_url = key
            _health.reset()
        return _client


def get_blocking_redis() -> redis.Redis:
    """The process-wide client for blocking reads of at most :data:`BLOCK_MAX` seconds
    (``wait_for``): its socket timeout is that plus ``JOBS_REDIS_SOCKET_TIMEOUT``, so a block is
    never cut by the short request-path timeout, and its pool reuses connections across waits."""
    global _blocking, _blocking_key
    settings = get_settings()
    with _lock:
        key = _connection_key(settings)
        if _blocking is None or _blocking_key != key:
            timeout = BLOCK_MAX + settings.redis_socket_timeout
            _blocking = build_redis(timeout, settings.redis_socket_timeout, health_check_interval=30)
            _blocking_key = key
        return _blocking


def new_redis(socket_timeout: float | None = None) -> redis.Redis:
    """A dedicated client (workers, the scheduler): RQ adjusts its socket timeout itself."""
    return build_redis(socket_timeout, get_settings().redis_socket_timeout)


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
            except REDIS_DOWN as exc:
                if not is_redis_down(exc):
                    raise  # a wrong password is not "down": the caller sees it, nothing is spooled
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
    global _client, _client_url, _probe, _blocking, _blocking_key
    forget_masters()
    with _lock:
        _client = None
        _client_url = None
        _probe = None
        _blocking = None
        _blocking_key = None
    _health.reset()
