"""Audit log of operator actions: who did what to which job or periodic job, from where, when.

Entries live in one bounded Redis stream (``keys.audit()``, trimmed to about
``JOBS_AUDIT_MAX_ENTRIES``), written by the API, the dashboard and the CLI for retry, cancel,
stop, delete, pause/resume and scheduler actions::

    record("admin", "retry", "job-123", source="api")
    recent(50)   # newest first: [{"id", "who", "action", "target", "source", "at", "detail"}, ...]

Recording never breaks the action it describes: if Redis refuses the write, it is logged.
"""

from __future__ import annotations

import getpass
import logging
import time
from typing import Any

import redis

from core.config import get_settings
from core.platform import keys
from core.platform.connection import get_redis

logger = logging.getLogger(__name__)

# The one key of the audit log (to move into core.platform.keys with the other key names).
SOURCES = ("api", "cli", "dashboard")
MAX_FIELD_CHARS = 200


def _clip(value: Any) -> str:
    return str(value if value is not None else "")[:MAX_FIELD_CHARS]


def record(who: str, action: str, target: str, source: str, detail: str = "") -> str | None:
    """Append one operator action; returns the stream entry id, or None if Redis refused it."""
    if source not in SOURCES:
        raise ValueError(f"unknown audit source {source!r}; accepted: {', '.join(SOURCES)}")
    entry = {"who": _clip(who), "action": _clip(action), "target": _clip(target), "source": source,
             "at": repr(time.time()), "detail": _clip(detail)}
    try:
        entry_id = get_redis().xadd(keys.audit(), entry, maxlen=get_settings().audit_max_entries, approximate=True)
    except redis.RedisError as exc:
        logger.warning("audit entry not written (%s): %s", exc, entry)
        return None
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def recent(limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` actions, newest first."""
    rows = get_redis().xrevrange(keys.audit(), "+", "-", count=limit)
    entries = []
    for entry_id, fields in rows:
        data = {k.decode(): v.decode() for k, v in fields.items()}
        entries.append({"id": entry_id.decode(), "who": data.get("who", ""), "action": data.get("action", ""),
                        "target": data.get("target", ""), "source": data.get("source", ""),
                        "at": float(data.get("at") or 0), "detail": data.get("detail", "")})
    return entries


def cli_actor() -> str:
    """Who runs the CLI: the operating-system login (there is no token on the command line)."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (container without a passwd entry)
        return "cli:unknown"
