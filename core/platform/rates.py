"""How a rate is written: ``"60/m"``, ``"100/min"``, ``"5/10s"``, ``"1000/h"``, ``"2/s"``.

The grammar alone, below every layer: settings (``JOBS_RATE_LIMIT_<QUEUE>``) are checked with it
when they are read, and :mod:`core.flow.limits` enforces rates written this way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidPayloadError

UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
         "d": 86400, "day": 86400}
UNIT_NAMES = {1: "s", 60: "min", 3600: "h", 86400: "day"}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """``count`` jobs per ``period`` seconds, at most ``burst`` back to back."""

    count: int
    period: float
    burst: int = 1

    @property
    def text(self) -> str:
        unit = UNIT_NAMES.get(int(self.period)) if self.period == int(self.period) else None
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period:g}s"


def parse_rate(value: Any, what: str = "rate_limit") -> Rate:
    """``"60/m"``, ``"100/min"``, ``"5/10s"``, ``"1000/h"``, ``"2/s"`` -> :class:`Rate`."""
    if isinstance(value, Rate):
        return value
    match = _RATE_RE.match(value) if isinstance(value, str) else None
    unit = match and UNITS.get(match.group(3))
    if not match or not unit:
        raise InvalidPayloadError(
            f"{what} {str(value)[:40]!r} is not a rate; accepted: '<count>/<unit>' or '<count>/<n><unit>' with "
            f"unit s, m (min), h or d, e.g. '60/m', '5/10s'")
    count, multiple = int(match.group(1)), int(match.group(2) or 1)
    if not 1 <= count <= 1_000_000 or not 1 <= multiple <= 1_000_000:
        raise InvalidPayloadError(f"{what} {value!r}: count and period must be whole numbers from 1 to 1000000")
    return Rate(count, float(unit * multiple))
