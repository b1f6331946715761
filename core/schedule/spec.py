"""What a periodic schedule is, and the checks on one a host app registers (no Redis here).

A :class:`PeriodicJob` is the same record for the built-in schedules (``owner="builtin"``,
defined from the settings in :mod:`core.schedule.periodic`) and the host app's own (``owner="host"``,
registered at run time through Python, the CLI or HTTP). The owner is what lets the built-in
registration replace and prune its own entries without ever touching the host's.

Every check raises a :class:`~core.errors.JobsError` (HTTP 400) naming the bad value and what is
accepted, so the three entry points share one set of messages.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.config import QUEUE_NAMES, get_settings
from core.errors import InvalidScheduleError, UnknownTaskError
from core.queue import task_registry
from core.queue.job_options import encode_payload
from core.schedule import cron

logger = logging.getLogger(__name__)

ID_PREFIX = "periodic-"
BUILTIN, HOST = "builtin", "host"
OVERLAP_POLICIES = ("skip", "queue")  # skip: no new run while the previous one is pending/running
MISSED_POLICIES = ("run_once", "skip")  # after downtime: one catch-up run, or none
MIN_INTERVAL, MAX_INTERVAL = 1, 366 * 86_400
NAME_RULE = "1-64 letters, digits, '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class PeriodicJob:
    """One schedule: run ``task`` on ``queue`` with ``kwargs`` every ``interval`` seconds or at
    each ``cron`` wall-clock time in ``tz``."""

    id: str
    name: str
    task: str
    queue: str  # short name
    kwargs: dict[str, Any] = field(default_factory=dict)
    interval: int | None = None  # seconds
    cron: str | None = None  # wall-clock times in tz
    tz: str = "UTC"
    overlap: str = "skip"
    missed: str = "run_once"
    owner: str = BUILTIN

    @property
    def trigger(self) -> str:
        if self.interval:
            return f"every {self.interval // 60} min" if self.interval % 60 == 0 else f"every {self.interval} s"
        return f"cron {self.cron} {self.tz}"

    def signature(self) -> str:
        """The whole definition as canonical JSON: equal signatures mean nothing changed."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> PeriodicJob:
        return cls(**json.loads(raw))

    def first_run(self, now: float) -> float:
        """When a newly registered schedule first fires: an interval at once, a cron at its next time."""
        return now if self.interval else self.next_cron(now)

    def next_run(self, due: float, now: float) -> float:
        """The run after the one due at ``due``, strictly later than ``now``. Intervals keep their
        phase (due + k * interval), so a late pass or a downtime never makes them drift."""
        if self.interval:
            return due + (math.floor(max(0.0, now - due) / self.interval) + 1) * self.interval
        return self.next_cron(now)

    def next_cron(self, after: float) -> float:
        assert self.cron is not None
        return cron.next_fire(cron.parse_cron(self.cron), ZoneInfo(self.tz), after)


def schedule_id(name: str) -> str:
    """The id a host schedule is stored under (the same family as the built-ins)."""
    return f"{ID_PREFIX}{check_name(name)}"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
        raise InvalidScheduleError(f"bad schedule name {shown}: use {NAME_RULE}")
    return name


def check_zone(tz: Any) -> str:
    """An IANA zone name that zoneinfo (or the tzdata package) knows."""
    accepted = "an IANA time zone such as UTC, Africa/Nairobi or America/New_York"
    if not isinstance(tz, str) or not 1 <= len(tz) <= 64:
        raise InvalidScheduleError(f"bad time zone {str(tz)[:80]!r}; accepted: {accepted}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidScheduleError(f"unknown time zone {tz!r}; accepted: {accepted}") from exc
    return tz


def check_interval(every: Any) -> int:
    """Whole seconds from 1 s to 366 days, as an int or a timedelta."""
    accepted = f"whole seconds from {MIN_INTERVAL} to {MAX_INTERVAL} (366 days), as an int or a timedelta"
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if isinstance(seconds, float) and seconds.is_integer():
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise InvalidScheduleError(f"bad interval {str(every)[:40]!r}; accepted: {accepted}")
    return seconds


def check_policy(kind: str, value: Any, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise InvalidScheduleError(f"unknown {kind} policy {str(value)[:40]!r}; accepted: {', '.join(accepted)}")
    return value


def task_queue(task: Any, queue: Any = None) -> str:
    """The short name of the queue ``task`` is registered on (``queue`` when given)."""
    if queue is not None:
        short = get_settings().short_queue_name(queue) if isinstance(queue, str) else queue
        if short not in QUEUE_NAMES:
            raise InvalidScheduleError(f"unknown queue {str(queue)[:80]!r}; accepted: {', '.join(QUEUE_NAMES)}")
        queues = [short]
    else:
        queues = list(QUEUE_NAMES)
    found = [q for q in queues if isinstance(task, str) and task_registry.get(q, task) is not None]
    if not found:
        where = "; ".join(f"{q}: {', '.join(task_registry.names(q)) or '-'}" for q in queues)
        on = f" on queue {queues[0]}" if queue is not None else ""
        raise UnknownTaskError(f"unknown task {str(task)[:80]!r}{on}; registered: {where}")
    if len(found) > 1:
        raise InvalidScheduleError(f"task {task!r} is registered on {', '.join(found)}; pass queue= to choose one")
    return found[0]


def host_definition(name: Any, task: Any, *, cron_expr: Any = None, interval: Any = None, tz: Any = "UTC",
                    payload: Any = None, queue: Any = None, overlap: Any = "skip",
                    missed: Any = "run_once") -> PeriodicJob:
    """A host schedule from caller input, every value checked."""
    periodic_id = schedule_id(name)
    if (cron_expr is None) == (interval is None):
        raise InvalidScheduleError("give exactly one of cron (e.g. '0 8 * * *') or interval/every (seconds)")
    if cron_expr is not None:
        cron.parse_cron(cron_expr)
        cron_expr = " ".join(cron_expr.split())
    seconds = check_interval(interval) if interval is not None else None
    return PeriodicJob(
        id=periodic_id, name=name, task=task, queue=task_queue(task, queue),
        kwargs=encode_payload(payload, get_settings().max_payload_bytes), interval=seconds, cron=cron_expr,
        tz=check_zone(tz), overlap=check_policy("overlap", overlap, OVERLAP_POLICIES),
        missed=check_policy("missed-run", missed, MISSED_POLICIES), owner=HOST,
    )
