"""Rate and concurrency limits for jobs the fallback runs (Redis down), kept in the spool file.

A job keeps its limits when it falls back: the spool stores the same ``fk_limits`` entries that
Redis would (:func:`core.flow.limits.job_limits`), the fallback's runner threads check them in the
claim's transaction, and the hand-back gives them to Redis with the job. Without this a Gmail sync
limited to one per user, or an LLM call limited to 60/min, would run unlimited for as long as
Redis is away, and again after it returned.

The rules are the ones ``core/queue/lua/limits_lib.lua`` applies, over the spool instead of Redis:

* **rate**: GCRA, one row per limiter in ``limiters`` holding the theoretical arrival time.
  Time is this host's clock; every process using the spool is on this host.
* **concurrency**: the running rows that carry the limiter and whose lease is live. A process
  that dies stops renewing its leases, so its permits run out with them, as in Redis.

Scope: one spool serves one host, so while Redis is down a limit holds per host, not across
hosts (nothing shared is reachable). A job over a limit stays waiting in the spool and the other
jobs are claimed past it; the runner threads look again at their next poll (0.2 s).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

SLACK = 0.0005  # s: the same tolerance as limits_lib's try_limits


def entries(raw: str | None, queue_entry: str = "") -> list[dict[str, Any]]:
    """A job's limit entries plus its queue's (``JOBS_RATE_LIMIT_<Q>``), skipping unreadable ones."""
    found: list[dict[str, Any]] = []
    for text in (raw, queue_entry):
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        found += [e for e in (value if isinstance(value, list) else [value]) if isinstance(e, dict) and "n" in e]
    return found


def allowed_at(db: sqlite3.Connection, entry: dict[str, Any], now: float) -> float:
    """When a job under ``entry`` may start (``<= now``: now). Runs inside the claim's transaction."""
    if entry.get("p"):
        return _tat(db, entry["n"]) - (entry["p"] / entry["c"]) * (entry.get("b", 1) - 1)
    running = db.execute(
        "SELECT count(*) FROM jobs, json_each(jobs.limits) AS e WHERE jobs.status = 'running' "
        "AND jobs.lease_until >= ? AND json_extract(e.value, '$.n') = ?", (now, entry["n"])).fetchone()[0]
    return now if running < entry["c"] else float("inf")


def take(db: sqlite3.Connection, limits: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    """Take every limit of a job, or none: returns None when all allow it, else the one that blocks.

    A concurrency permit needs no write: the claimed row, running with a lease, is the permit."""
    for entry in limits:
        if allowed_at(db, entry, now) > now + SLACK:
            return entry
    for entry in limits:
        if entry.get("p"):
            tat = max(_tat(db, entry["n"]), now) + entry["p"] / entry["c"]
            db.execute("INSERT INTO limiters (name, tat) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET tat = ?",
                       (entry["n"], tat, tat))
    return None


def _tat(db: sqlite3.Connection, name: str) -> float:
    """A rate limiter's theoretical arrival time (0: it holds nothing back)."""
    row = db.execute("SELECT tat FROM limiters WHERE name = ?", (name,)).fetchone()
    return row[0] if row else 0.0


def forget_idle(db: sqlite3.Connection, now: float) -> int:
    """Drop rate limiters whose arrival time has passed (they allow the next job either way)."""
    return db.execute("DELETE FROM limiters WHERE tat < ?", (now,)).rowcount
