"""Five-field cron expressions and their next fire time in an IANA time zone.

Why our own and not croniter (installed with RQ) or crontab (rq-scheduler's): the next fire time
must be exact across daylight-saving changes in any zone, with rules we can state and test, and
take an injected ``after`` instant so tests never wait. Both libraries compute in naive or
fixed-offset time and leave the DST edge cases to the caller.

Fields: ``minute hour day-of-month month day-of-week``; each is ``*``, a number, a range
``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's end), or a comma list of
those. Months and weekdays also take English names (``jan``, ``mon``); day-of-week 0 and 7 are
both Sunday. As in Vixie cron, when both day-of-month and day-of-week are restricted a day
matches if *either* does. ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``
and ``@yearly`` (``@annually``) are accepted as shorthands.

Daylight-saving rules (the schedule is a wall-clock time in its zone):

* a wall time that does not exist (skipped in spring-forward, e.g. 02:30 in New York on the
  second Sunday of March) fires once, at the first valid instant after it: the moment the clocks
  jump (03:00 local). Several skipped times of one schedule (``*/15 2 * * *``) collapse into that
  one run;
* a wall time that happens twice (fall-back, 01:30 in New York on the first Sunday of November)
  fires once, at its *first* occurrence (daylight time). Nothing fires during the repeated hour,
  so a sub-hourly cron has a one-hour pause that night; use an interval schedule (``every``)
  for work that must run at a steady pace in real time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from core.errors import InvalidScheduleError

logger = logging.getLogger(__name__)

CRON_HELP = ("5 fields 'minute hour day-of-month month day-of-week' (e.g. '0 8 * * *'), each *, a number, "
             "a list 1,2, a range 1-5 or a step */15; or @hourly, @daily, @weekly, @monthly, @yearly")

_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_SHORTHANDS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
               "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _WEEKDAYS))
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?$")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: leap years count
SEARCH_YEARS = 50  # Feb 29 that must also be a Monday recurs within 28 years (40 across a century rule)


@dataclass(frozen=True)
class CronExpr:
    """A parsed cron expression: the allowed values of each field."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool

    def day_matches(self, day: datetime) -> bool:
        """Vixie cron's rule: both day fields restricted -> either may match."""
        in_days = day.day in self.days
        in_weekdays = (day.weekday() + 1) % 7 in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays


def _bad(text: str, why: str) -> InvalidScheduleError:
    return InvalidScheduleError(f"bad cron {text[:100]!r}: {why}; accepted: {CRON_HELP}")


def _value(token: str, field: str, low: int, high: int, names: dict[str, int], text: str) -> int:
    if token in names:
        return names[token]
    if not token.isascii() or not token.isdigit() or len(token) > 4:
        raise _bad(text, f"{field} value {token!r} is not a number" + (" or a name" if names else ""))
    value = int(token)
    if not low <= value <= high:
        raise _bad(text, f"{field} value {value} is out of range {low}-{high}")
    return value


def _parse_field(raw: str, field: str, low: int, high: int, names: dict[str, int], text: str) -> set[int]:
    values: set[int] = set()
    for item in raw.split(","):
        match = _ITEM.match(item)
        if not match:
            raise _bad(text, f"{field} item {item[:20]!r} is not *, a number, a range a-b or a step */n")
        span, step_text = match.groups()
        step = 1
        if step_text is not None:
            step = int(step_text) if len(step_text) <= 4 else 0
            if not 1 <= step <= high - low + 1:
                raise _bad(text, f"{field} step {step_text!r} must be from 1 to {high - low + 1}")
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, last = span.split("-", 1)
            start = _value(first, field, low, high, names, text)
            end = _value(last, field, low, high, names, text)
            if start > end:
                raise _bad(text, f"{field} range {span!r} runs backwards")
        else:
            start = _value(span, field, low, high, names, text)
            end = high if step_text is not None else start
        values.update(range(start, end + 1, step))
    return values


def parse_cron(text: str) -> CronExpr:
    """Parse ``text`` or raise :class:`InvalidScheduleError` naming the bad field and value."""
    if not isinstance(text, str):
        raise InvalidScheduleError(f"cron must be a string, got {type(text).__name__}; accepted: {CRON_HELP}")
    normalized = _SHORTHANDS.get(text.strip().lower(), text.strip().lower())
    parts = normalized.split()
    if len(parts) != 5:
        raise _bad(text, f"it has {len(parts)} field(s), not 5")
    fields = [_parse_field(raw, name, low, high, names, text)
              for raw, (name, low, high, names) in zip(parts, _FIELDS)]
    minutes, hours, days, months, weekdays = fields
    weekdays = {d % 7 for d in weekdays}  # 7 is Sunday too
    weekday_restricted = not parts[4].startswith("*")
    if not weekday_restricted and not any(d <= _DAYS_IN_MONTH[m - 1] for m in months for d in days):
        raise _bad(text, "that day of the month never occurs in those months")
    expr = CronExpr(text=text.strip(), minutes=frozenset(minutes), hours=frozenset(hours), days=frozenset(days),
                    months=frozenset(months), weekdays=frozenset(weekdays),
                    day_restricted=not parts[2].startswith("*"), weekday_restricted=weekday_restricted)
    next_wall_time(expr, datetime(2000, 1, 1))  # raises for a date that never comes (Feb 30 ...)
    return expr


def next_wall_time(expr: CronExpr, start: datetime) -> datetime:
    """The first naive wall-clock minute at or after ``start`` that ``expr`` matches."""
    t = start.replace(second=0, microsecond=0)
    if t < start:
        t += timedelta(minutes=1)
    limit = start.year + SEARCH_YEARS
    while t.year <= limit:
        if t.month not in expr.months:
            t = (t.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0)
        elif not expr.day_matches(t):
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)
        elif t.hour not in expr.hours:
            t = (t + timedelta(hours=1)).replace(minute=0)
        elif t.minute not in expr.minutes:
            later = [m for m in expr.minutes if m > t.minute]
            t = t.replace(minute=min(later)) if later else (t + timedelta(hours=1)).replace(minute=0)
        else:
            return t
    raise _bad(expr.text, f"it never fires within {SEARCH_YEARS} years of {start:%Y-%m-%d}")


def _offset(instant: float, zone: ZoneInfo) -> timedelta:
    offset = datetime.fromtimestamp(instant, UTC).astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> float:
    """Epoch seconds of naive ``wall`` in ``zone``: its first occurrence when it happens twice,
    the end of the gap (the moment the clocks jump) when it does not exist."""
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.timestamp()
    if datetime.fromtimestamp(instant, UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return instant  # exists (for an ambiguous wall time, fold=0 is the first occurrence)
    # In a gap: fold=0 uses the offset before the jump, fold=1 the offset after; the jump lies
    # between those two readings. Find its exact second by bisection.
    low, high = sorted((wall.replace(tzinfo=zone, fold=1).timestamp(), instant))
    before = _offset(low, zone)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, zone) == before:
            low = middle
        else:
            high = middle
    return float(high)


def next_fire(expr: CronExpr, zone: ZoneInfo, after: float) -> float:
    """Epoch seconds of the first run of ``expr`` in ``zone`` strictly after epoch ``after``.

    Wall times map to instants in a non-decreasing way under the rules in the module docstring,
    so walking matching wall times forward from the wall time of ``after`` finds the first one
    whose instant is later than ``after``."""
    wall = datetime.fromtimestamp(after, UTC).astimezone(zone).replace(tzinfo=None)
    candidate = next_wall_time(expr, wall.replace(second=0, microsecond=0))
    while True:
        instant = wall_to_instant(candidate, zone)
        if instant > after:
            return instant
        candidate = next_wall_time(expr, candidate + timedelta(minutes=1))
