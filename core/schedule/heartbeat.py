"""The periodic scheduler's heartbeat: is any scheduler still enqueueing periodic jobs?

Every pass of ``scripts/periodic_scheduler.py`` calls :func:`beat`, which writes
``fikiri:scheduler:heartbeat`` (a small hash: ``at``, the scheduler's own ``interval``, ``host``,
``pid``; it expires 7 days after the last tick). A scheduler is *alive* while its last tick is at
most ``MISSED_TICKS`` (3) of its intervals old; the interval is the one the scheduler recorded, so
``--interval`` and ``JOBS_SCHEDULER_INTERVAL`` both count. No heartbeat at all means no scheduler
ever ran against this Redis (or none for 7 days): not alive, and no alert (nothing to miss).

Health (admin) and ``/metrics`` read :func:`scheduler_status`. A dead scheduler cannot report its own
death and enqueues no periodic check, so the workers watch it: every maintenance sweep, the worker
holding a queue's maintenance lock calls :func:`silent_incident`, and when the scheduler has gone
silent and no alert went out for that, enqueues ``check_scheduler_liveness`` (core/ops/alerts.py),
which sends the alert through the failure-rate alert channel once per incident.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from core.config import get_settings
from core.platform import keys
from core.platform.connection import get_redis

MISSED_TICKS = 3  # alive while the last tick is at most this many intervals old
HEARTBEAT_TTL = 7 * 86400  # s: the heartbeat outlives a dead scheduler long enough to be read


def beat(interval: float, connection: Any = None, now: float | None = None) -> float:
    """Record one scheduler pass (one pipelined round trip); returns the tick's time."""
    at = time.time() if now is None else now
    with (connection or get_redis()).pipeline(transaction=False) as pipe:
        pipe.hset(keys.scheduler_heartbeat(), mapping={"at": repr(at), "interval": repr(float(interval)),
                                                        "host": socket.gethostname(), "pid": os.getpid()})
        pipe.expire(keys.scheduler_heartbeat(), HEARTBEAT_TTL)
        pipe.execute()
    return at


def _status(raw: dict[bytes, bytes], now: float) -> dict[str, Any]:
    if not raw or b"at" not in raw:
        return {"alive": False, "last_tick": None, "interval": None, "silent_for": None, "host": None, "pid": None}
    at = float(raw[b"at"])
    interval = float(raw.get(b"interval") or get_settings().scheduler_interval)
    silent = max(0.0, now - at)
    return {"alive": silent <= MISSED_TICKS * interval, "last_tick": at, "interval": interval,
            "silent_for": round(silent, 3), "host": (raw.get(b"host") or b"").decode() or None,
            "pid": int(raw[b"pid"]) if raw.get(b"pid") else None}


def scheduler_status(connection: Any = None, now: float | None = None) -> dict[str, Any]:
    """``{"alive", "last_tick" (epoch s or None), "interval", "silent_for" (s), "host", "pid"}``."""
    raw = (connection or get_redis()).hgetall(keys.scheduler_heartbeat())
    return _status(raw, time.time() if now is None else now)


def alert_ttl() -> int:
    """How long the alert marker lives after the last check that saw the scheduler silent: the
    cooldown plus the gap between two checks (a worker's maintenance sweep)."""
    settings = get_settings()
    return int(settings.alert_cooldown + settings.worker_maintenance_interval)


def incident_id(status: dict[str, Any]) -> str:
    """One silence, one id: the stale tick it began after (milliseconds)."""
    return f"scheduler-{int(status['last_tick'] * 1000)}"


def silent_incident(connection: Any = None, now: float | None = None) -> str | None:
    """The workers' cheap check (one round trip): the incident id when the scheduler has gone silent
    and no alert went out for it yet; ``None`` otherwise. While an alert's marker lives, each call
    that still sees the silence renews it (the cooldown counts from the last one)."""
    connection = connection or get_redis()
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.scheduler_heartbeat())
        pipe.exists(keys.scheduler_alert())
        raw, alerted = pipe.execute()
    status = _status(raw, time.time() if now is None else now)
    if status["alive"] or status["last_tick"] is None:
        return None
    if alerted:
        connection.expire(keys.scheduler_alert(), alert_ttl())
        return None
    return incident_id(status)
