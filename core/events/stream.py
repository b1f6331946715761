"""Live job events: read the lifecycle stream, filtered by job, user, queue or task.

The lifecycle scripts append every transition of every job to one Redis stream
(:func:`core.platform.keys.events`, ``fikiri:events``, trimmed to about ``JOBS_EVENTS_MAXLEN`` entries),
in the same atomic step as the transition. This module reads it::

    from core.events.stream import listen_events

    for event in listen_events(job_id="abc123", timeout=60):
        print(event["event"], event["status"], event["at"])      # enqueued pending ..., started running ...
        if event["status"] in ("completed", "failed", "canceled", "expired"):
            break

An event is ``{"id", "job_id", "event", "status", "queue", "task_name", "user_id", "at"}`` plus,
where it applies, ``detail`` (the raw text) and its reading: ``error`` (failed, retrying,
abandoned, canceled, expired), ``progress`` (decoded JSON) or ``reason`` (parked, deferred, stopping).
``id`` is the stream entry id (``<ms>-<seq>``): pass it back as ``last_id`` to resume after it,
missing nothing and repeating nothing (as long as the stream still holds it).

Where a listener starts: after ``last_id`` when given (``"0"``: the oldest event kept, ``"$"``:
only new ones); without it, a job's listener replays that job's current run first (from its
``enqueued``/``delayed`` event on) and a listener of everything starts with new events.

Cost, and why it is bounded. The stream is shared, so a listener reads every event and filters
here: one ``XREAD`` of up to :data:`READ_COUNT` entries per round trip, blocking up to
``block_ms`` when idle (no polling). N listeners cost Redis N times the event rate in entries
sent, and the listener's CPU. Measured (``python -m core.events.stream --bench REDIS_URL``, 2 shared
cores, Redis on loopback): reading and filtering 50,000 events in batches of 500 takes 0.3-0.4 s
wall, 0.2 s of it this process's CPU (6-8 µs per event), so one listener keeps up with about
100,000 events/s and a full replay of the default 50,000 entries costs well under a second.
A job listener's replay reads from its creation time
(less :data:`REPLAY_MARGIN_S` for clock skew) to now: at most ``JOBS_EVENTS_MAXLEN`` entries,
once per connection. Each listener holds one Redis connection while it lives.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from core.config import get_settings
from core.errors import JobsError
from core.platform import keys
from core.platform.connection import new_redis

logger = logging.getLogger(__name__)

READ_COUNT = 500  # entries per XREAD: one round trip moves at most this many
DEFAULT_BLOCK_MS = 5000
REPLAY_MARGIN_S = 5.0  # a job's replay starts this long before its created_at (host/Redis clock skew)
MAX_STREAM_ID = 2**64 - 1
_ENTRY_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")

# The job's status after each event (None: the event alone does not tell, e.g. a deleted job).
EVENT_STATUS: dict[str, str | None] = {
    "enqueued": "pending", "delayed": "delayed", "pending": "pending", "started": "running",
    "parked": "delayed", "released": "pending", "progress": "running", "completed": "completed",
    "failed": "failed", "retrying": "retrying", "deferred": "delayed", "canceled": "canceled",
    "stopping": "running", "abandoned": None, "requeued": "pending", "deleted": None,
    "expired": "expired",  # not started before its expires: ended by the claim, never ran
}
EVENTS = tuple(EVENT_STATUS)
RUN_STARTS = frozenset({"enqueued", "delayed"})  # the first event of a run (a re-run of an id starts again)
FINAL_STATUSES = frozenset({"completed", "failed", "canceled", "expired"})
_DETAIL_AS = {"failed": "error", "retrying": "error", "abandoned": "error", "canceled": "error", "expired": "error",
              "parked": "reason", "deferred": "reason", "stopping": "reason", "delayed": "reason"}


class InvalidEventIdError(JobsError):
    """An event id (``last_id``, ``Last-Event-ID``) that is not a stream entry id."""

    code = "invalid_event_id"


def parse_event_id(value: Any, *, allow_special: bool = True) -> str:
    """``value`` as a stream entry id ``<ms>-<seq>`` (``<ms>`` alone means ``<ms>-0``).

    ``"$"`` (only new events) and ``"0"`` (the oldest kept) are accepted when ``allow_special``."""
    if allow_special and value == "$":
        return "$"
    match = _ENTRY_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) > MAX_STREAM_ID or int(match.group(2) or 0) > MAX_STREAM_ID:
        shown = repr(value[:60]) if isinstance(value, str) else type(value).__name__
        raise InvalidEventIdError(
            f"malformed event id {shown}: expected a stream entry id '<milliseconds>-<sequence>' in ASCII "
            f"digits (such as '1712345678901-0'), as sent in the 'id:' lines of the event stream")
    return f"{int(match.group(1))}-{int(match.group(2) or 0)}"


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def to_event(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    """One stream entry as the event callers see (see the module docstring)."""
    data = {_text(k): _text(v) for k, v in fields.items()}
    entry = _text(entry_id)
    name = data.get("event", "")
    event: dict[str, Any] = {
        "id": entry, "job_id": data.get("job", ""), "event": name, "status": EVENT_STATUS.get(name),
        "queue": data.get("queue", ""), "task_name": data.get("task", ""), "user_id": data.get("user") or None,
        "at": _id_tuple(entry)[0] / 1000.0,
    }
    detail = data.get("detail")
    if detail:
        event["detail"] = detail
        if name == "progress":
            try:
                event["progress"] = json.loads(detail)
            except ValueError:
                event["progress"] = detail
        elif name in _DETAIL_AS:
            event[_DETAIL_AS[name]] = detail
    return event


@dataclass(frozen=True)
class EventFilter:
    """Which events a listener wants; ``None`` matches anything. ``user_id`` also drops events
    that name another user (a job id reused by someone else), keeping events without a user."""

    job_id: str | None = None
    user_id: str | None = None
    queue: str | None = None
    task: str | None = None
    exclude_tasks: frozenset[str] = frozenset()

    def matches(self, event: dict[str, Any]) -> bool:
        if self.job_id is not None and event["job_id"] != self.job_id:
            return False
        if self.user_id is not None and event["user_id"] != self.user_id:
            # a job's listener keeps the job's events that name no user; a user's listener does not
            if self.job_id is None or event["user_id"] is not None:
                return False
        if self.queue is not None and event["queue"] != self.queue:
            return False
        if self.task is not None and event["task_name"] != self.task:
            return False
        return event["task_name"] not in self.exclude_tasks


def last_entry_id(connection: redis.Redis) -> str:
    """The newest entry id of the stream now (``0-0`` when empty): "$" made concrete, so a
    listener that comes back after an idle read misses nothing added in between."""
    rows = connection.xrevrange(keys.events(), "+", "-", count=1)
    return _text(rows[0][0]) if rows else "0-0"


def _read(connection: redis.Redis, after: str, block_ms: int | None, count: int = READ_COUNT) -> list[tuple]:
    """One XREAD after ``after``: ``[(entry id, fields), ...]`` (empty when it timed out)."""
    reply = connection.xread({keys.events(): after}, count=count, block=block_ms)
    return list(reply[0][1]) if reply else []


def _job_run_start(connection: redis.Redis, job_id: str) -> str | None:
    """Where a job's replay starts: its created_at (less a margin) as an entry id, or None."""
    from core.api.jobs import get_job

    job = get_job(job_id)
    if job is None or job.created_at is None or job.mode != "redis":
        return None
    return f"{max(0, int((job.created_at - REPLAY_MARGIN_S) * 1000))}-0"


def replay(connection: redis.Redis, wanted: EventFilter, after: str, until: str) -> list[dict[str, Any]]:
    """A job's events from ``after`` up to ``until`` (inclusive), from its last run start on.

    Bounded by the stream's length; read in :data:`READ_COUNT` batches, without blocking."""
    found: list[dict[str, Any]] = []
    end = _id_tuple(until)
    while _id_tuple(after) < end:
        rows = _read(connection, after, None)
        if not rows:
            break
        for entry_id, fields in rows:
            if _id_tuple(_text(entry_id)) > end:
                break
            event = to_event(entry_id, fields)
            if wanted.matches(event):
                found.append(event)
        after = _text(rows[-1][0])
    starts = [i for i, event in enumerate(found) if event["event"] in RUN_STARTS]
    return found[starts[-1]:] if starts else found


@dataclass
class Cursor:
    """Where a listener is: the last entry id it has seen (the next read starts after it)."""

    last_id: str


def start_cursor(connection: redis.Redis, wanted: EventFilter, last_id: str | None) -> tuple[Cursor, list[dict]]:
    """The listener's starting point, and the events it must see first (a job's replay)."""
    if last_id is not None:
        parsed = parse_event_id(last_id)
        return Cursor(last_entry_id(connection) if parsed == "$" else parsed), []
    now = last_entry_id(connection)
    if wanted.job_id is None:
        return Cursor(now), []
    since = _job_run_start(connection, wanted.job_id)
    return Cursor(now), (replay(connection, wanted, since, now) if since else [])


def follow(connection: redis.Redis, wanted: EventFilter, cursor: Cursor, block_ms: int,
           deadline: float | None = None) -> Iterator[list[dict[str, Any]]]:
    """Batches of matching events after ``cursor`` as they come; an empty batch each time a
    read found nothing to send (the caller's chance to send a heartbeat or give up).

    Ends at ``deadline`` (``time.monotonic()``), if given. ``cursor.last_id`` moves past every
    entry read, matching or not, so a resumed listener never reads an entry twice."""
    while deadline is None or time.monotonic() < deadline:
        wait = block_ms
        if deadline is not None:
            wait = max(1, min(block_ms, int((deadline - time.monotonic()) * 1000)))
        rows = _read(connection, cursor.last_id, wait)
        batch = []
        for entry_id, fields in rows:
            event = to_event(entry_id, fields)
            cursor.last_id = event["id"]
            if wanted.matches(event):
                batch.append(event)
        yield batch


def listen_connection(block_ms: int) -> redis.Redis:
    """A Redis connection of the listener's own: its socket timeout outlasts a blocked XREAD."""
    return new_redis(socket_timeout=block_ms / 1000.0 + get_settings().redis_socket_timeout + 1.0)


def listen_events(job_id: str | None = None, user_id: str | None = None, last_id: str | None = None,
                  block_ms: int = DEFAULT_BLOCK_MS, *, queue: str | None = None, task: str | None = None,
                  timeout: float | None = None, connection: redis.Redis | None = None) -> Iterator[dict[str, Any]]:
    """Events in stream order, as they happen: of one job, one user, a queue or a task (all that
    are given must match). Blocks up to ``block_ms`` per read while idle; ends after ``timeout``
    seconds if given, else runs until the caller stops iterating (close the generator, or break).

    ``last_id``: resume after this event id; see the module docstring for where it starts
    without one. A malformed id raises :class:`InvalidEventIdError` (a ``JobsError``, HTTP 400)."""
    if isinstance(block_ms, bool) or not isinstance(block_ms, int) or block_ms < 1:
        raise JobsError(f"block_ms must be a whole number of milliseconds >= 1, got {block_ms!r}")
    if last_id is not None:
        parse_event_id(last_id)  # fail in the caller, before the first next()
    return _listen(EventFilter(job_id, None if user_id is None else str(user_id), queue, task),
                   last_id, block_ms, timeout, connection)


def _listen(wanted: EventFilter, last_id: str | None, block_ms: int, timeout: float | None,
            connection: redis.Redis | None) -> Iterator[dict[str, Any]]:
    own = connection is None
    conn = listen_connection(block_ms) if connection is None else connection
    try:
        cursor, first = start_cursor(conn, wanted, last_id)
        yield from first
        deadline = None if timeout is None else time.monotonic() + timeout
        for batch in follow(conn, wanted, cursor, block_ms, deadline):
            yield from batch
    finally:
        if own:
            conn.close()


# --- server-sent events --------------------------------------------------------------------------
def sse_event(event: dict[str, Any]) -> str:
    """One event as an SSE message: ``id:`` is the stream entry id (the client's Last-Event-ID)."""
    return f"id: {event['id']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def sse_stream(wanted: EventFilter, last_id: str | None, *, max_seconds: float | None = None,
               heartbeat: float | None = None, retry_ms: int | None = None,
               connection: redis.Redis | None = None) -> Iterator[str]:
    """The text of an SSE response: a ``retry:`` hint, the events, a comment line as heartbeat
    when nothing was sent for ``heartbeat`` seconds, and an end after ``max_seconds``.

    Where it starts (and a job's replay) is worked out now, in the caller, so a Redis error or a
    bad ``last_id`` raises here, before any byte of the response is sent. Defaults come from
    ``JOBS_EVENTS_STREAM_MAX_SECONDS``, ``JOBS_EVENTS_HEARTBEAT`` and ``JOBS_EVENTS_RETRY_MS``.
    The Redis connection is closed when the iterator ends or is closed (the client went away:
    the server notices at its next write, a heartbeat at the latest)."""
    settings = get_settings()
    max_seconds = settings.events_stream_max_seconds if max_seconds is None else max_seconds
    heartbeat = settings.events_heartbeat if heartbeat is None else heartbeat
    retry_ms = settings.events_retry_ms if retry_ms is None else retry_ms
    block_ms = max(1, int(heartbeat * 1000))
    own = connection is None
    conn = listen_connection(block_ms) if connection is None else connection
    try:
        cursor, first = start_cursor(conn, wanted, last_id)
    except BaseException:
        if own:
            conn.close()
        raise
    head = f"retry: {retry_ms}\n: live events for {max_seconds:g}s; reconnect with Last-Event-ID\n\n"
    return _sse_body(conn if own else None, conn, wanted, cursor, [head, *(sse_event(e) for e in first)],
                     time.monotonic() + max_seconds, heartbeat)


def _sse_body(owned: redis.Redis | None, conn: redis.Redis, wanted: EventFilter, cursor: Cursor,
              first: list[str], deadline: float, heartbeat: float) -> Iterator[str]:
    try:
        yield "".join(first)
        last_write = time.monotonic()
        for batch in follow(conn, wanted, cursor, max(1, int(heartbeat * 1000)), deadline):
            if batch:
                yield "".join(sse_event(e) for e in batch)
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= heartbeat * 0.9:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
        yield f": this connection's time is up; reconnect with Last-Event-ID: {cursor.last_id}\n\n"
    except redis.RedisError as exc:
        logger.warning("event stream ended early: Redis error %s", exc)
        yield ": Redis is unreachable; reconnect later with Last-Event-ID\n\n"
    finally:
        if owned is not None:
            owned.close()


def _bench(redis_url: str, entries: int = 50_000) -> None:
    """``python -m core.events.stream --bench REDIS_URL``: read and filter cost per event, through XREAD
    in :data:`READ_COUNT` batches, on a throwaway key (deleted afterwards)."""
    connection = redis.Redis.from_url(redis_url)
    key = f"{keys.events()}:bench"
    fields = {"job": "j", "event": "completed", "queue": "email", "task": "send_email", "user": "7"}
    with connection.pipeline(transaction=False) as pipe:
        for _ in range(entries):
            pipe.xadd(key, fields)
        pipe.execute()
    wanted, after, read = EventFilter(job_id="other"), "0-0", 0
    started, cpu = time.perf_counter(), time.process_time()
    while rows := connection.xread({key: after}, count=READ_COUNT):
        for entry_id, data in rows[0][1]:
            wanted.matches(to_event(entry_id, data))
            read += 1
        after = _text(rows[0][1][-1][0])
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    connection.delete(key)
    print(f"{read} events read and filtered in {wall:.3f}s ({cpu:.3f}s CPU of this process): "
          f"{wall / read * 1e6:.1f} us per event")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--bench":
        _bench(sys.argv[2])
    else:
        print("usage: python -m core.events.stream --bench REDIS_URL", file=sys.stderr)
