"""Outbound webhooks: job events POSTed to your URL, signed, retried by the job machinery.

    from core.events.webhooks import register_webhook, list_webhooks, remove_webhook, webhook_attempts

    hook = register_webhook("https://example.com/hooks/fikiri", secret=None,        # None: one is made
                            tasks=["send_email"], users=None, events=["completed", "failed"])
    hook["secret"]      # shown here only; list_webhooks() hides it

How an event reaches a receiver:

1. The lifecycle scripts append it to the events stream (``fikiri:events``, :mod:`core.events.stream`).
2. A dispatcher (a thread in every worker process, :func:`start_dispatcher`) reads the stream
   through one Redis consumer group (``XREADGROUP``), so each entry goes to one dispatcher, and
   for every webhook whose filters match it enqueues one ``deliver_webhook`` job on
   ``JOBS_WEBHOOK_QUEUE`` (default ``crm``), then ``XACK``s the entry. Entries a dead dispatcher
   read but never acknowledged are taken over with ``XAUTOCLAIM`` after ``JOBS_WEBHOOK_CLAIM_IDLE``
   seconds. The delivery job's id is ``whk-<webhook id>-<entry id>`` and it is enqueued with
   ``unique_for``, so an entry handled twice (taken over after its first dispatcher enqueued but
   died before the ack) never makes a second job, even after the first one ended.
3. The job POSTs the event as JSON with ``X-Fikiri-Signature: t=<unix seconds>,v1=<hex>``, the
   HMAC-SHA256 of ``"<t>.<body>"`` under the webhook's secret. A 2xx is delivered; a 5xx, 408,
   429 or a timeout/connection error fails the attempt and the job retries with back-off
   (``JOBS_WEBHOOK_MAX_RETRIES``), a 429/503 with ``Retry-After`` waits as asked; any other 4xx
   or a redirect fails at once (another attempt cannot help). Every attempt is recorded (time,
   event, status code or error, duration): the newest ``JOBS_WEBHOOK_ATTEMPTS_KEPT`` per webhook.

Receivers verify with :func:`verify_signature` (or its eight lines, in the README), and should
dedupe on ``X-Fikiri-Event-Id``: a receiver that timed out after processing gets the retry.
Deliveries of different events run as separate jobs, so they can arrive out of order; the body's
``id`` (the stream entry id) orders them.

Events of the delivery task itself are never dispatched (a webhook on every task would otherwise
feed itself). A webhook receives only events after it was registered.

Cost: the dispatcher blocks on ``XREADGROUP`` (2 s) when idle, plus one ``XAUTOCLAIM`` per round;
per event, one pipelined read of the webhooks (cached 2 s) and one enqueue per matching webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
import requests

from core.api.queues import RedisQueue, get_queue
from core.config import get_settings
from core.errors import JobNotFoundError, JobsError, PermanentJobError, RetryAfter
from core.events.stream import EVENTS, to_event
from core.execution.progress import current_job_id
from core.platform import keys
from core.platform.connection import REDIS_DOWN, get_redis, new_redis
from core.queue import task_registry

logger = logging.getLogger(__name__)

DELIVERY_TASK = "deliver_webhook"
MAX_URL_CHARS = 2048
SECRET_CHARS = (16, 256)
MAX_FILTER_ITEMS = 100
SIGNATURE_HEADER = "X-Fikiri-Signature"
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx
CACHE_SECONDS = 2.0
DISPATCH_BLOCK_MS = 2000
DISPATCH_COUNT = 100


class InvalidWebhookError(JobsError):
    """A webhook registration that cannot be used (URL, secret or a filter); HTTP 400."""

    code = "invalid_webhook"


class WebhookNotFoundError(JobNotFoundError):
    """No webhook with this id (HTTP 404; the CLI exits 1)."""


class WebhookLimitError(JobsError):
    """``JOBS_WEBHOOK_MAX`` webhooks exist already."""

    code = "conflict"
    http_status = 409


class DeliveryError(RuntimeError):
    """An attempt the receiver may accept later (5xx, 408, 429, timeout): the job retries."""


# --- registrations -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    secret: str
    tasks: list[str] | None = None
    users: list[str] | None = None
    events: list[str] | None = None
    created_at: float = field(default_factory=time.time)

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether this webhook wants ``event`` (registered before it happened, filters agree)."""
        if event["at"] < math.floor(self.created_at * 1000) / 1000.0:
            return False
        if self.events is not None and event["event"] not in self.events:
            return False
        if self.tasks is not None and event["task_name"] not in self.tasks:
            return False
        return self.users is None or event["user_id"] in self.users

    def public(self) -> dict[str, Any]:
        """What list/show answer: everything but the secret (its last 4 characters as a hint)."""
        data = asdict(self)
        data["secret"] = "..." + self.secret[-4:]
        return data


def _shown(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def validate_url(url: Any) -> str:
    """An absolute http(s) URL with a host, at most :data:`MAX_URL_CHARS` long, no fragment."""
    accepted = f"an absolute http:// or https:// URL with a host, at most {MAX_URL_CHARS} characters"
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or any(c.isspace() for c in url):
        raise InvalidWebhookError(f"unusable webhook url {_shown(url)}; accepted: {accepted}, no spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidWebhookError(f"unusable webhook url {_shown(url)} ({exc}); accepted: {accepted}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhookError(f"unusable webhook url {_shown(url)}: scheme {parts.scheme!r}, host "
                                  f"{parts.hostname!r}; accepted: {accepted}")
    if parts.fragment:
        raise InvalidWebhookError(f"unusable webhook url {_shown(url)}: it has a #fragment; accepted: {accepted}")
    return url


def _validate_secret(secret: Any) -> str:
    low, high = SECRET_CHARS
    if not isinstance(secret, str) or not low <= len(secret) <= high or not secret.isprintable():
        got = f"{len(secret)} characters" if isinstance(secret, str) else type(secret).__name__
        raise InvalidWebhookError(f"unusable webhook secret ({got}); accepted: {low}-{high} printable characters, "
                                  f"or none to have one generated")
    return secret


def _validate_list(name: str, values: Any, check: Any) -> list[str] | None:
    """``None`` (anything) or a non-empty list of strings, each passing ``check``."""
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidWebhookError(f"{name} must be a list of strings or null (anything), got {_shown(values)}")
    items = list(values)
    if not items or len(items) > MAX_FILTER_ITEMS:
        raise InvalidWebhookError(f"{name} must list 1-{MAX_FILTER_ITEMS} values (or be null: anything), "
                                  f"got {len(items)}")
    return sorted({check(name, item) for item in items})


def _check_name(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and name == "users":
        value = str(value)
    if not isinstance(value, str) or not 1 <= len(value) <= 128 or not all(
            c.isalnum() or c in "_.:@+-" for c in value) or not value.isascii():
        raise InvalidWebhookError(f"malformed value {_shown(value)} in {name}: expected 1-128 ASCII letters, "
                                  f"digits or _ . : @ + -")
    return value


def _check_event(name: str, value: Any) -> str:
    if value not in EVENTS:
        raise InvalidWebhookError(f"unknown event {_shown(value)} in {name}; accepted: {', '.join(EVENTS)}")
    return value


def ensure_group(connection: redis.Redis) -> None:
    """Create the dispatchers' consumer group at the stream's end, if it does not exist yet."""
    try:
        connection.xgroup_create(keys.events(), keys.webhook_group(), id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def register_webhook(url: str, secret: str | None = None, tasks: Iterable[str] | None = None,
                     users: Iterable[str] | None = None, events: Iterable[str] | None = None) -> dict[str, Any]:
    """Register a webhook; ``tasks``/``users``/``events`` of None match anything. Returns it with
    its ``secret`` (generated when None; shown only here). Bad input raises
    :class:`InvalidWebhookError` naming the value and what is accepted."""
    hook = Webhook(id=uuid.uuid4().hex[:16], url=validate_url(url),
                   secret=secrets.token_hex(32) if secret is None else _validate_secret(secret),
                   tasks=_validate_list("tasks", tasks, _check_name),
                   users=_validate_list("users", users, _check_name),
                   events=_validate_list("events", events, _check_event))
    connection = get_redis()
    limit = get_settings().webhook_max
    if connection.hlen(keys.webhooks()) >= limit:
        raise WebhookLimitError(f"{limit} webhooks are registered already (JOBS_WEBHOOK_MAX); remove one first")
    ensure_group(connection)
    connection.hset(keys.webhooks(), hook.id, json.dumps(asdict(hook)))
    _cache.clear()
    logger.info("webhook %s registered for %s", hook.id, hook.url)
    return asdict(hook)


def _load(raw: bytes | str) -> Webhook:
    return Webhook(**json.loads(raw))


def all_webhooks(connection: redis.Redis | None = None) -> list[Webhook]:
    """Every registered webhook (one HGETALL; at most JOBS_WEBHOOK_MAX)."""
    rows = (connection or get_redis()).hgetall(keys.webhooks())
    return sorted((_load(v) for v in rows.values()), key=lambda h: h.created_at)


def list_webhooks() -> list[dict[str, Any]]:
    """Every webhook, oldest first, secrets hidden."""
    return [hook.public() for hook in all_webhooks()]


def check_webhook_id(webhook_id: Any) -> str:
    if not isinstance(webhook_id, str) or len(webhook_id) != 16 or not all(c in "0123456789abcdef" for c in webhook_id):
        raise InvalidWebhookError(f"malformed webhook id {_shown(webhook_id)}: expected 16 hex digits, "
                                  f"as returned when it was registered")
    return webhook_id


def get_webhook(webhook_id: str) -> Webhook:
    raw = get_redis().hget(keys.webhooks(), check_webhook_id(webhook_id))
    if raw is None:
        raise WebhookNotFoundError(f"webhook {webhook_id} does not exist")
    return _load(raw)


def remove_webhook(webhook_id: str) -> bool:
    """Remove a webhook and its attempts; its delivery jobs still queued end without a POST."""
    check_webhook_id(webhook_id)
    with get_redis().pipeline(transaction=True) as pipe:
        pipe.hdel(keys.webhooks(), webhook_id)
        pipe.delete(keys.webhook_attempts(webhook_id))
        removed = bool(pipe.execute()[0])
    _cache.clear()
    if not removed:
        raise WebhookNotFoundError(f"webhook {webhook_id} does not exist")
    return True


def webhook_attempts(webhook_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A webhook's delivery attempts, newest first: ``at, event, event_id, job_id, status, error,
    duration_ms, outcome`` (``delivered``, ``retry``, ``deferred``, ``failed``, ``skipped``)."""
    get_webhook(webhook_id)
    rows = get_redis().lrange(keys.webhook_attempts(webhook_id), 0, max(0, limit - 1))
    return [json.loads(row) for row in rows]


# --- signing -----------------------------------------------------------------------------------
def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Fikiri-Signature`` value: ``t=<timestamp>,v1=<HMAC-SHA256 of "<t>.<body>", hex>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, tolerance: float = 300.0,
                     now: float | None = None) -> bool:
    """What a receiver checks: the signature matches the raw body and is at most ``tolerance``
    seconds old (a replayed old request fails). Constant-time comparison."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


# --- delivery (the task) -----------------------------------------------------------------------
def _record(webhook_id: str, attempt: dict[str, Any]) -> None:
    key = keys.webhook_attempts(webhook_id)
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            pipe.lpush(key, json.dumps(attempt))
            pipe.ltrim(key, 0, get_settings().webhook_attempts_kept - 1)
            pipe.execute()
    except redis.RedisError as exc:  # the outcome of the delivery matters more than its record
        logger.warning("attempt of webhook %s not recorded: %s", webhook_id, exc)


def _post(hook: Webhook, event: dict[str, Any]) -> requests.Response:
    body = json.dumps({"webhook_id": hook.id, **event}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "fikiri-jobs-webhooks/1",
               "X-Fikiri-Event": event.get("event", ""), "X-Fikiri-Event-Id": event.get("id", ""),
               SIGNATURE_HEADER: sign(hook.secret, body, int(time.time()))}
    return requests.post(hook.url, data=body, headers=headers, timeout=get_settings().webhook_timeout,
                         allow_redirects=False)


def _judge(response: requests.Response) -> tuple[str, Exception | None]:
    """The outcome of an answer, and what to raise for it (None: delivered)."""
    status = response.status_code
    if 200 <= status < 300:
        return "delivered", None
    if status in (429, 503) and response.headers.get("Retry-After"):
        from core.platform.http import retry_after_seconds

        seconds = min(retry_after_seconds(response, 1.0), get_settings().max_retry_after)
        return "deferred", RetryAfter(seconds, f"webhook receiver answered {status} with Retry-After")
    if status >= 500 or status in RETRY_STATUSES:
        return "retry", DeliveryError(f"webhook receiver answered {status}; retried with back-off")
    what = "a redirect (not followed: register the final URL)" if 300 <= status < 400 else "a client error"
    return "failed", PermanentJobError(f"webhook receiver answered {status}, {what}; not retried")


def deliver_webhook(webhook_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """The delivery job: one signed POST of ``event`` to the webhook, its attempt recorded."""
    record = {"at": time.time(), "event": event.get("event"), "event_id": event.get("id"),
              "job_id": current_job_id(), "status": None, "error": None, "duration_ms": 0.0}
    try:
        hook = get_webhook(webhook_id)
    except WebhookNotFoundError:
        return {"delivered": False, "reason": f"webhook {webhook_id} was removed"}
    started = time.perf_counter()
    try:
        response = _post(hook, event)
    except requests.RequestException as exc:
        record.update(error=f"{type(exc).__name__}: {exc}"[:300], outcome="retry",
                      duration_ms=round((time.perf_counter() - started) * 1000, 1))
        _record(webhook_id, record)
        raise DeliveryError(f"webhook {webhook_id} not reached: {record['error']}") from exc
    outcome, problem = _judge(response)
    record.update(status=response.status_code, outcome=outcome, error=str(problem) if problem else None,
                  duration_ms=round((time.perf_counter() - started) * 1000, 1))
    _record(webhook_id, record)
    if problem is not None:
        raise problem
    return {"delivered": True, "status": response.status_code, "event_id": event.get("id")}


def delivery_queue() -> RedisQueue:
    """The queue of delivery jobs (``JOBS_WEBHOOK_QUEUE``), with the task registered on it."""
    settings = get_settings()
    queue = get_queue(settings.webhook_queue)
    if task_registry.get(queue.short_name, DELIVERY_TASK) is None:
        queue.register_task(DELIVERY_TASK, deliver_webhook, max_retries=settings.webhook_max_retries,
                            fallback=False)
    return queue


# --- the dispatcher: stream entries -> delivery jobs ---------------------------------------------
class _Cache:
    """The webhooks, re-read at most every :data:`CACHE_SECONDS` (a registration clears it here;
    other processes see it within that time)."""

    def __init__(self) -> None:
        self._hooks: list[Webhook] = []
        self._until = 0.0
        self._lock = threading.Lock()

    def get(self, connection: redis.Redis) -> list[Webhook]:
        with self._lock:
            if time.monotonic() >= self._until:
                self._hooks = all_webhooks(connection)
                self._until = time.monotonic() + CACHE_SECONDS
            return self._hooks

    def clear(self) -> None:
        with self._lock:
            self._until = 0.0


_cache = _Cache()


def delivery_job_id(webhook_id: str, entry_id: str) -> str:
    """One id per (webhook, event): ``whk-<webhook id>-<entry id>``."""
    return f"whk-{webhook_id}-{entry_id}"


def _dispatch(connection: redis.Redis, entries: list[tuple[Any, Any]]) -> int:
    """Enqueue the deliveries of ``entries`` and acknowledge them; returns the enqueue calls."""
    if not entries:
        return 0
    hooks = _cache.get(connection)
    queue = delivery_queue() if hooks else None
    settings = get_settings()
    window = int(max(3600, 10 * settings.webhook_claim_idle))  # outlives any takeover of the entry
    made = 0
    for entry_id, fields in entries:
        if not fields:  # trimmed from the stream while pending: nothing left to deliver
            continue
        event = to_event(entry_id, fields)
        if event["task_name"] == DELIVERY_TASK:
            continue
        for hook in hooks:
            if hook.matches(event):
                job_id = delivery_job_id(hook.id, event["id"])
                queue.enqueue_job(DELIVERY_TASK, {"webhook_id": hook.id, "event": event}, job_id=job_id,
                                  unique_for=window, unique_key=job_id, max_retries=settings.webhook_max_retries)
                made += 1
    connection.xack(keys.events(), keys.webhook_group(), *[entry_id for entry_id, _ in entries])
    return made


def run_dispatcher_once(connection: redis.Redis, consumer: str | None = None, block_ms: int | None = None,
                        count: int = DISPATCH_COUNT) -> dict[str, int]:
    """One round: take over entries idle for ``JOBS_WEBHOOK_CLAIM_IDLE`` (a dead dispatcher's),
    then read new entries (blocking up to ``block_ms``), enqueue their deliveries, acknowledge.

    Returns ``{"claimed", "read", "deliveries"}``. Safe to run in many processes at once: the
    group hands each entry to one consumer, and a delivery job id is enqueued at most once.
    Does nothing (and returns at once) until a webhook has been registered."""
    consumer = consumer or f"{socket.gethostname()}.{threading.get_native_id()}"
    idle_ms = int(get_settings().webhook_claim_idle * 1000)
    try:
        reply = connection.xautoclaim(keys.events(), keys.webhook_group(), consumer, idle_ms, "0-0", count=count)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return {"claimed": 0, "read": 0, "deliveries": 0}
    claimed = list(reply[1])
    made = _dispatch(connection, claimed)
    rows = connection.xreadgroup(keys.webhook_group(), consumer, {keys.events(): ">"}, count=count, block=block_ms)
    entries = list(rows[0][1]) if rows else []
    made += _dispatch(connection, entries)
    return {"claimed": len(claimed), "read": len(entries), "deliveries": made}


def forget_dead_consumers(connection: redis.Redis, keep: str) -> int:
    """Delete consumers idle for 10 x ``JOBS_WEBHOOK_CLAIM_IDLE`` with nothing pending (their
    processes are gone); bounded by the number of consumers (one per worker process ever)."""
    limit_ms = 10 * get_settings().webhook_claim_idle * 1000
    removed = 0
    try:
        consumers = connection.xinfo_consumers(keys.events(), keys.webhook_group())
    except redis.ResponseError:
        return 0
    for info in consumers:
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name != keep and info["pending"] == 0 and info["idle"] > limit_ms:
            connection.xgroup_delconsumer(keys.events(), keys.webhook_group(), name)
            removed += 1
    return removed


class Dispatcher(threading.Thread):
    """The dispatcher thread of a worker process; :meth:`stop` ends it within one block."""

    def __init__(self, consumer: str, block_ms: int = DISPATCH_BLOCK_MS) -> None:
        super().__init__(name="fikiri-webhooks", daemon=True)
        self.consumer = consumer
        self.block_ms = block_ms
        self._stop_event = threading.Event()

    def stop(self, wait: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(wait)

    def run(self) -> None:
        connection = new_redis(socket_timeout=self.block_ms / 1000 + get_settings().redis_socket_timeout + 1)
        next_cleanup = 0.0
        while not self._stop_event.is_set():
            try:
                if not connection.exists(keys.webhooks()):  # nothing registered: cheap idle wait
                    self._stop_event.wait(self.block_ms / 1000)
                    continue
                run_dispatcher_once(connection, self.consumer, self.block_ms)
                if time.monotonic() >= next_cleanup:
                    forget_dead_consumers(connection, self.consumer)
                    next_cleanup = time.monotonic() + 10 * get_settings().webhook_claim_idle
            except REDIS_DOWN as exc:
                logger.warning("webhook dispatcher %s: Redis unreachable (%s); retrying in 1s", self.consumer, exc)
                self._stop_event.wait(1.0)
            except Exception:
                logger.exception("webhook dispatcher %s: round failed; retrying in 1s", self.consumer)
                self._stop_event.wait(1.0)
        connection.close()


def start_dispatcher(consumer: str | None = None, block_ms: int = DISPATCH_BLOCK_MS) -> Dispatcher:
    """Start the dispatcher thread (a worker calls this once; the name should be the worker's)."""
    dispatcher = Dispatcher(consumer or f"{socket.gethostname()}.{threading.get_native_id()}", block_ms)
    dispatcher.start()
    return dispatcher


# Registered at import (core.queue.task_registry lists this module), so workers run deliveries; this
# registers directly instead of through delivery_queue(), which would import every task module.
get_queue(get_settings().webhook_queue).register_task(
    DELIVERY_TASK, deliver_webhook, max_retries=get_settings().webhook_max_retries, fallback=False)
