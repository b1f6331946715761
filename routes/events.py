"""Server-sent events of job transitions: ``GET <api>/<job_id>/events`` and ``GET <api>/events``.

* ``/<job_id>/events`` (owner or admin): that job's events, starting with a replay of its
  current run; a user token sees only its own job (another's answers the same 404 as a job that
  does not exist, via :func:`routes.jobs.visible_job`).
* ``/events`` (admin): every job's events from now on; ``?queue=``, ``?task=``, ``?user=`` filter.

Each message's ``id:`` is the stream entry id. A client that reconnects sends it back as the
``Last-Event-ID`` header (browsers' EventSource does so by itself; ``?last_event_id=`` works
too, for a first connection), and the stream resumes right after it: nothing missed, nothing
twice. A malformed id answers 400 naming the expected form.

Route precedence: Werkzeug matches static path segments before converters, whatever the order
of registration, so ``/events`` is this admin stream and never ``GET /<job_id>`` for a job named
"events" (as with ``/health`` and ``/audit``); that job's own stream is still
``/events/events``. ``tests/test_events.py`` pins this.

Cost per connection, and why other requests still get through under gunicorn's threaded
workers: a live stream holds one gunicorn thread and one Redis connection for its whole life
(one blocking ``XREAD`` at a time, see :mod:`core.events.stream`). Both are bounded: a connection ends
after ``JOBS_EVENTS_STREAM_MAX_SECONDS`` (the client reconnects after the ``retry:`` hint), and
a process serves at most ``JOBS_EVENTS_MAX_STREAMS`` at once (default 2, below the 4 threads of
our gunicorn unit), answering 503 with ``Retry-After`` beyond that, so at least
``--threads`` - ``JOBS_EVENTS_MAX_STREAMS`` threads per process are always free for the rest of
the API. A heartbeat comment every ``JOBS_EVENTS_HEARTBEAT`` seconds keeps proxies from closing
an idle stream and lets the server see a client that left (at its next write).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, request

from core.config import QUEUE_NAMES, get_settings
from core.events.stream import EventFilter, parse_event_id, sse_stream
from routes.common import current_identity, error, install_error_handlers, require_admin, require_identity
from routes.jobs import visible_job
from routes.params import name_value, parse_choice, str_arg, user_id_value

logger = logging.getLogger(__name__)

events_bp = Blueprint("jobs_events", __name__, url_prefix="/api/jobs")
install_error_handlers(events_bp)


class StreamSlots:
    """At most ``limit`` live streams in this process (a counter under a lock, never waiting)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def try_acquire(self, limit: int) -> bool:
        with self._lock:
            if self.active >= limit:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1


slots = StreamSlots()


class _SlotStream:
    """The response body: hands back the slot once, when the server closes the body (it always
    does, even when the client left before the first byte)."""

    def __init__(self, body: Iterator[str], release: Callable[[], None]) -> None:
        self._body = body
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> _SlotStream:
        return self

    def __next__(self) -> str:
        return next(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _last_event_id() -> str | None:
    """``Last-Event-ID`` (header, else ``?last_event_id=``), checked; None when absent or empty."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        raw = request.args.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    return parse_event_id(raw.strip(), allow_special=False)


def event_stream_response(wanted: EventFilter, heartbeat: float | None = None) -> Any:
    """An SSE response of the events ``wanted`` (the API's routes and the dashboard's share it);
    ``heartbeat``: seconds between keep-alive comments (default JOBS_EVENTS_HEARTBEAT)."""
    last_id = _last_event_id()
    settings = get_settings()
    if not slots.try_acquire(settings.events_max_streams):
        response, status = error(
            "unavailable", f"this server process already serves {settings.events_max_streams} live event "
                           f"stream(s) (JOBS_EVENTS_MAX_STREAMS); reconnect later", 503)
        response.headers["Retry-After"] = str(max(1, math.ceil(settings.events_retry_ms / 1000)))
        return response, status
    try:
        body = sse_stream(wanted, last_id, heartbeat=heartbeat)
    except BaseException:
        slots.release()
        raise
    response = Response(_SlotStream(body, slots.release), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@events_bp.get("/events")
@require_admin
def all_events():
    """Every job's events from now on (admin); ``?queue=``, ``?task=``, ``?user=`` narrow them."""
    queue = request.args.get("queue")
    task = str_arg("task")
    user = request.args.get("user")
    return event_stream_response(EventFilter(
        queue=parse_choice("queue", queue, QUEUE_NAMES) if queue else None,
        task=name_value("task", task) if task else None,
        user_id=user_id_value(user, "user") if user else None))


@events_bp.get("/<job_id>/events")
@require_identity
def job_events(job_id: str):
    """One job's events (owner or admin), its current run replayed first."""
    visible_job(job_id)
    identity = current_identity()
    return event_stream_response(EventFilter(job_id=job_id, user_id=None if identity.is_admin else identity.user_id))
