"""Rate and concurrency limits: how they are written, resolved per job, and stored on it.

A limit is declared on the task (``@ai_queue.task(rate_limit="60/m", rate_key="provider")``),
overridden per call, or set for a whole queue (``JOBS_RATE_LIMIT_AI=100/m``). Enforcement is in
Redis, inside the claim script (``core/queue/lua/claim.lua``), so it holds across every worker and host:

* **rate**: GCRA (the generic cell rate algorithm). One key per limit holds one number, the
  theoretical arrival time; a check is O(1) and tells exactly when the next slot frees, so a
  job over its limit is parked until that instant instead of being polled. Jobs are spaced
  evenly (``burst`` 1 by default), so no window boundary ever lets two windows' worth through
  (a fixed window's weakness); a sliding-window log would need a sorted set of N timestamps.
* **concurrency**: permits are entries in a sorted set scored with the holder's lease expiry,
  so a SIGKILLed worker's permit runs out with its lease.

A job over a limit is neither failed nor spun on: it is *parked* (status ``delayed``, with the
reason, e.g. "rate limited: ai provider 60/min") and released when its slot frees; other tasks
on the queue are not held up. Keys: ``rate_key``/``concurrency_key`` are a fixed string or a
template over the payload such as ``"{user_id}"`` or ``"gmail:{user_id}"``; the default is the
task name. Limits with the same key share their budget (two tasks calling one provider).
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidPayloadError
from core.platform.rates import Rate, parse_rate

_KEY_RE = re.compile(r"^[A-Za-z0-9_.@+:{}-]{1,120}$")
MAX_RESOLVED_KEY = 200
MAX_CONCURRENCY = 10_000


def check_concurrency(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise InvalidPayloadError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {value!r}")
    return value


def check_key_template(value: Any, what: str) -> str:
    """A limit key: letters, digits, ``_ . @ + : -`` and ``{field}`` placeholders over the payload."""
    if not isinstance(value, str) or not _KEY_RE.match(value):
        raise InvalidPayloadError(
            f"{what} {str(value)[:60]!r} is not accepted: 1-120 letters, digits, _ . @ + : - and "
            f"{{field}} placeholders naming payload fields, e.g. 'provider' or 'gmail:{{user_id}}'")
    fields(value, what)
    return value


def fields(template: str, what: str = "key") -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidPayloadError(f"{what} {template!r} has unbalanced braces ({exc})") from exc
    names = [name for _text, name, _spec, _conv in parsed if name is not None]
    for name in names:
        if not name.isidentifier():
            raise InvalidPayloadError(f"{what} {template!r}: placeholder {{{name}}} must name a payload field")
    return names


def resolve_key(template: str, payload: dict[str, Any], what: str, user_id: str | None = None) -> str:
    """The template filled from the payload; ``{user_id}`` missing from the payload is filled from
    the job's own ``user_id=`` option (so ``enqueue_job(task, {"job_id": 7}, user_id=u)`` keys the
    limit on ``u``). A field found in neither, or a non-scalar one, is a clear error."""
    values = {}
    for name in fields(template, what):
        value = payload.get(name)
        if value is None and name == "user_id":
            value = user_id
        if value is None or isinstance(value, dict | list):
            extra = " or the enqueue's user_id= option" if name == "user_id" else ""
            raise InvalidPayloadError(
                f"{what} {template!r} needs payload field {name!r} (a string or number){extra}; the payload has "
                f"{', '.join(sorted(payload)) or 'no fields'}")
        values[name] = value
    resolved = template.format(**values)
    if len(resolved) > MAX_RESOLVED_KEY:
        raise InvalidPayloadError(f"{what} resolves to {len(resolved)} characters; at most {MAX_RESOLVED_KEY}")
    return resolved


@dataclass(frozen=True)
class Limits:
    """The limits of one task or one call, before they are resolved against a payload."""

    rate: Rate | None = None
    rate_key: str | None = None
    concurrency: int | None = None
    concurrency_key: str | None = None

    def __bool__(self) -> bool:
        return self.rate is not None or self.concurrency is not None


def check_limits(rate_limit: Any = None, rate_key: Any = None, concurrency: Any = None,
                 concurrency_key: Any = None, declared: Limits | None = None) -> Limits:
    """Validate limit options (a task's declaration, or one call's override of ``declared``: a call
    may change only the key of a limit the task declares)."""
    if rate_key is not None and rate_limit is None and not (declared and declared.rate):
        raise InvalidPayloadError("rate_key needs rate_limit (e.g. rate_limit='60/m'); the task declares none")
    if concurrency_key is not None and concurrency is None and not (declared and declared.concurrency):
        raise InvalidPayloadError("concurrency_key needs concurrency (the most jobs running at once); "
                                  "the task declares none")
    return Limits(
        rate=parse_rate(rate_limit) if rate_limit is not None else None,
        rate_key=check_key_template(rate_key, "rate_key") if rate_key is not None else None,
        concurrency=check_concurrency(concurrency) if concurrency is not None else None,
        concurrency_key=check_key_template(concurrency_key, "concurrency_key") if concurrency_key is not None else None,
    )


def merge(declared: Limits, override: Limits) -> Limits:
    """A call's options override the task's declaration field by field (a call that changes only
    the rate keeps the task's key: "30/m on the provider's budget")."""
    return Limits(
        rate=override.rate or declared.rate,
        rate_key=override.rate_key or declared.rate_key,
        concurrency=override.concurrency or declared.concurrency,
        concurrency_key=override.concurrency_key or declared.concurrency_key,
    )


def job_limits(queue_short: str, task_name: str, limits: Limits, payload: dict[str, Any],
               user_id: str | None = None) -> str | None:
    """The ``fk_limits`` field of one job (JSON), or None when the job has no limit of its own.

    Each entry: ``n`` limiter name (``rate:<key>``/``conc:<key>``), ``c`` count, ``p`` period
    (rate), ``b`` burst (rate), ``l`` the label shown while the job waits."""
    entries = []
    if limits.rate is not None:
        key = resolve_key(limits.rate_key, payload, "rate_key", user_id) if limits.rate_key else task_name
        rate = limits.rate
        entries.append({"n": f"rate:{key}", "c": rate.count, "p": rate.period, "b": rate.burst,
                        "l": f"rate limited: {queue_short} {key} {rate.text}"})
    if limits.concurrency is not None:
        key = resolve_key(limits.concurrency_key, payload, "concurrency_key", user_id) if limits.concurrency_key else task_name
        entries.append({"n": f"conc:{key}", "c": limits.concurrency,
                        "l": f"concurrency limited: {key} (at most {limits.concurrency} running)"})
    return json.dumps(entries, separators=(",", ":")) if entries else None


def queue_limit(queue_short: str, rate: Rate | None) -> str:
    """A queue-wide rate limit as claim.lua takes it (``''``: none)."""
    if rate is None:
        return ""
    return json.dumps({"n": f"rate:queue:{queue_short}", "c": rate.count, "p": rate.period, "b": rate.burst,
                       "l": f"rate limited: queue {queue_short} {rate.text}"}, separators=(",", ":"))


def held_permits(raw: str | bytes | None) -> list[str]:
    """The concurrency limiter names in a job's ``fk_limits`` (the permits its claim holds)."""
    if not raw:
        return []
    try:
        entries = json.loads(raw)
    except ValueError:
        return []
    return [e["n"] for e in entries if isinstance(e, dict) and str(e.get("n", "")).startswith("conc:")]
