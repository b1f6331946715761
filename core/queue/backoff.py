"""Exponential back-off between retries, shared by the Redis path and the fallback."""

from __future__ import annotations

import math

from core.config import get_settings


def retry_delays(max_retries: int, base: float | None = None, cap: float | None = None) -> list[int]:
    """Seconds to wait before retry 1..max_retries: base, 2*base, 4*base ... capped.

    Whole seconds, because RQ's scheduler works in seconds; a positive base never rounds to 0.
    """
    settings = get_settings()
    base = settings.retry_backoff_base if base is None else base
    cap = settings.retry_backoff_cap if cap is None else cap
    delays = []
    for attempt in range(max_retries):
        delay = min(base * (2**attempt), cap)
        delays.append(int(math.ceil(delay)) if delay > 0 else 0)
    return delays
