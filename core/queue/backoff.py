"""Retry policies: how long a failed job waits before its next attempt, and which failures retry.

One :class:`RetryPolicy` per job, shared by the Redis path (:func:`core.queue.lifecycle.attempt_outcome`
in every worker class, and :func:`core.queue.lifecycle.fail_pending` for an operator's fail with
retry) and the fallback, so every path waits the same way:

* **Back-off** (default): retry n waits ``base * 2**(n-1)`` seconds, at most ``cap``
  (``retry_backoff=(base, cap)``; by default ``JOBS_RETRY_BACKOFF_BASE`` / ``_CAP``), with **full
  jitter** by default: a uniformly random wait in ``[0, that delay]``, so jobs that failed together
  (a provider outage) do not all come back together. ``retry_jitter="none"`` waits exactly.
* **A schedule** (``retry_delays=[60, 120, 240]``): retry n waits the n-th delay (the last one
  repeats), exactly unless ``retry_jitter="full"`` is asked for.
* **Filters** (task-level only: they are exception types): with ``retry_on``, only a failure of one of
  those types (or a subclass) is retried; one in ``dont_retry_on`` never is (it wins over
  ``retry_on``). The job-timeout counts as a :class:`TimeoutError`. Anything else fails the job at
  once, its error saying it was not retried and why (:func:`core.execution.runner.run_attempt`).

A job carries its policy in its hash (``fk_retry``, JSON, written only when it differs from the
default), so a restarted worker, another host or the fallback's hand-back applies the same one.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

from core.config import get_settings
from core.errors import InvalidPayloadError

JITTERS = ("full", "none")
MAX_RETRY_DELAY = 7 * 86_400  # s: no single wait longer than a week (a failed job is kept that long)
MAX_SCHEDULE = 25  # entries of retry_delays (as many as max_retries may be)


class InvalidRetryPolicyError(InvalidPayloadError, ValueError):
    """A retry option that cannot be used (HTTP 400). Also a ValueError, as every task-declaration
    error of ``register_task`` is."""

    code = "invalid_retry_policy"


def retry_delays(max_retries: int, base: float | None = None, cap: float | None = None) -> list[int]:
    """Seconds to wait before retry 1..max_retries with no jitter: base, 2*base, 4*base ... capped.

    Whole seconds; a positive base never rounds to 0."""
    settings = get_settings()
    base = settings.retry_backoff_base if base is None else base
    cap = settings.retry_backoff_cap if cap is None else cap
    return [_exponential(base, cap, attempt) for attempt in range(max_retries)]


def _exponential(base: float, cap: float, retry: int) -> int:
    delay = min(base * (2 ** min(retry, 64)), cap)
    return int(math.ceil(delay)) if delay > 0 else 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def check_backoff(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (isinstance(value, list | tuple) and len(value) == 2 and all(_number(v) for v in value)
            and 0 <= value[0] <= value[1] <= MAX_RETRY_DELAY):
        return (_plain(value[0]), _plain(value[1]))
    raise InvalidRetryPolicyError(
        f"retry_backoff must be (base, cap): two numbers of seconds with 0 <= base <= cap <= {MAX_RETRY_DELAY}, "
        f"got {str(value)[:80]!r}; retry n waits base * 2**(n-1), at most cap")


def check_jitter(value: Any) -> str | None:
    if value is None or value in JITTERS:
        return value
    raise InvalidRetryPolicyError(f"retry_jitter must be one of {', '.join(map(repr, JITTERS))}, "
                                  f"got {str(value)[:80]!r}")


def check_delays(value: Any) -> tuple[int | float, ...] | None:
    if value is None:
        return None
    if (isinstance(value, list | tuple) and 1 <= len(value) <= MAX_SCHEDULE
            and all(_number(v) and 0 <= v <= MAX_RETRY_DELAY for v in value)):
        return tuple(_plain(v) for v in value)
    raise InvalidRetryPolicyError(
        f"retry_delays must be a list of 1 to {MAX_SCHEDULE} numbers of seconds from 0 to {MAX_RETRY_DELAY} "
        f"(retry n waits the n-th, the last repeats), got {str(value)[:80]!r}")


def check_exceptions(value: Any, name: str) -> tuple[type[BaseException], ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else (value,)
    if items and all(isinstance(item, type) and issubclass(item, BaseException) for item in items):
        return tuple(dict.fromkeys(items))
    raise InvalidRetryPolicyError(
        f"{name} must be an exception class or a tuple of them, such as (TimeoutError, ConnectionError), "
        f"got {str(value)[:80]!r}")


def _type_name(kind: type[BaseException]) -> str:
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


@dataclass(frozen=True)
class RetryPolicy:
    """When and whether a failed job runs again (see the module docstring). Unset parts (None,
    empty) take the defaults: the settings' back-off with full jitter, every failure retried."""

    backoff: tuple[float, float] | None = None  # (base, cap) in seconds
    jitter: str | None = None  # "full" | "none"; None: full for back-off, none for retry_delays
    delays: tuple[int | float, ...] | None = None  # an explicit schedule (replaces the back-off)
    retry_on: tuple[type[BaseException], ...] = ()  # task-level: only these (and subclasses) retry
    dont_retry_on: tuple[type[BaseException], ...] = ()  # task-level: these never retry
    retry_on_names: tuple[str, ...] = ()  # the filters' names, as a job stored them (for display)
    dont_retry_on_names: tuple[str, ...] = ()

    @classmethod
    def declare(cls, retry_backoff: Any = None, retry_jitter: Any = None, retry_delays: Any = None,
                retry_on: Any = None, dont_retry_on: Any = None) -> RetryPolicy:
        """A validated policy from the options of ``@q.task``/``enqueue_job``; a clear
        :class:`InvalidRetryPolicyError` naming what is accepted otherwise."""
        backoff, delays = check_backoff(retry_backoff), check_delays(retry_delays)
        if backoff is not None and delays is not None:
            raise InvalidRetryPolicyError("give retry_backoff (an exponential back-off) or retry_delays (a fixed "
                                          "schedule), not both")
        on, off = check_exceptions(retry_on, "retry_on"), check_exceptions(dont_retry_on, "dont_retry_on")
        return cls(backoff=backoff, jitter=check_jitter(retry_jitter), delays=delays, retry_on=on, dont_retry_on=off,
                   retry_on_names=tuple(map(_type_name, on)), dont_retry_on_names=tuple(map(_type_name, off)))

    def __bool__(self) -> bool:
        """Whether anything differs from the default policy."""
        return bool(self.backoff is not None or self.jitter is not None or self.delays is not None
                    or self.retry_on_names or self.dont_retry_on_names)

    def override(self, call: RetryPolicy) -> RetryPolicy:
        """This (a task's) policy with one call's options on top: a call's schedule (back-off or
        delays) replaces the task's, its jitter replaces the task's; the filters stay the task's."""
        if call.backoff is None and call.delays is None:
            backoff, delays = self.backoff, self.delays
        else:
            backoff, delays = call.backoff, call.delays
        return RetryPolicy(backoff=backoff, delays=delays, jitter=call.jitter or self.jitter,
                           retry_on=self.retry_on, dont_retry_on=self.dont_retry_on,
                           retry_on_names=self.retry_on_names, dont_retry_on_names=self.dont_retry_on_names)

    # --- the wait --------------------------------------------------------------------------------
    @property
    def effective_jitter(self) -> str:
        return self.jitter or ("none" if self.delays is not None else "full")

    def base_delay(self, retry: int) -> int | float:
        """The wait before retry ``retry + 1`` (``retry``: retries used so far) before jitter."""
        if self.delays is not None:
            return self.delays[min(retry, len(self.delays) - 1)]
        settings = get_settings()
        base, cap = self.backoff or (settings.retry_backoff_base, settings.retry_backoff_cap)
        return _exponential(base, cap, retry)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds until retry ``retry + 1`` may run: the base delay, or with full jitter a
        uniformly random wait in ``[0, base delay]`` (milliseconds)."""
        delay = self.base_delay(retry)
        if self.effective_jitter == "full" and delay > 0:
            return round((rng or random).uniform(0.0, float(delay)), 3)
        return float(delay)

    def describe_wait(self, retry: int) -> str:
        """How the wait before retry ``retry + 1`` was chosen, for the job's reason: ``retry_delays``,
        ``back-off, no jitter``, or ``back-off 8s, full jitter`` (the delay the jitter drew under)."""
        how = "retry_delays" if self.delays is not None else "back-off"
        if self.effective_jitter == "full":
            return f"{how} {self.base_delay(retry):g}s, full jitter"
        return how if self.delays is not None else f"{how}, no jitter"

    # --- filters ---------------------------------------------------------------------------------
    def not_retried_because(self, kind: type[BaseException], task_name: str, shown: str | None = None) -> str | None:
        """Why a failure of type ``kind`` (named ``shown`` in the reason) is not retried under this
        policy, or None (it is)."""
        if not isinstance(kind, type):
            return None
        shown = shown or _type_name(kind)
        if self.dont_retry_on and issubclass(kind, self.dont_retry_on):
            return (f"not retried: {shown} is in dont_retry_on "
                    f"({', '.join(self.dont_retry_on_names)}) of task {task_name!r}")
        if self.retry_on and not issubclass(kind, self.retry_on):
            return (f"not retried: {shown} is not in retry_on "
                    f"({', '.join(self.retry_on_names)}) of task {task_name!r}")
        return None

    # --- in the job hash ---------------------------------------------------------------------------
    def to_field(self) -> str | None:
        """The job hash's ``fk_retry`` (JSON of the parts that differ from the default), or None."""
        if not self:
            return None
        data: dict[str, Any] = {}
        if self.backoff is not None:
            data["backoff"] = list(self.backoff)
        if self.delays is not None:
            data["delays"] = list(self.delays)
        if self.jitter is not None:
            data["jitter"] = self.jitter
        if self.retry_on_names:
            data["retry_on"] = list(self.retry_on_names)
        if self.dont_retry_on_names:
            data["dont_retry_on"] = list(self.dont_retry_on_names)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_field(cls, raw: Any) -> RetryPolicy | None:
        """The policy a job hash's ``fk_retry`` holds; None when there is none or it is unreadable
        (written by something else: the caller falls back to the task's policy)."""
        if raw is None or raw == "":
            return None
        try:
            data = json.loads(raw)
            names = ("retry_on", "dont_retry_on")
            if not isinstance(data, dict) or not all(isinstance(data.get(n, []), list) for n in names):
                return None
            backoff, delays = check_backoff(data.get("backoff")), check_delays(data.get("delays"))
            return cls(backoff=backoff, delays=delays, jitter=check_jitter(data.get("jitter")),
                       retry_on_names=tuple(str(n) for n in data.get("retry_on", [])),
                       dont_retry_on_names=tuple(str(n) for n in data.get("dont_retry_on", [])))
        except (ValueError, TypeError):
            return None

    def describe(self) -> dict[str, Any]:
        """The effective policy as the Job and ``GET /api/jobs/<id>`` show it."""
        if self.delays is not None:
            backoff = None
        else:
            settings = get_settings()
            backoff = list(self.backoff or (_plain(settings.retry_backoff_base), _plain(settings.retry_backoff_cap)))
        return {"backoff": backoff, "delays": list(self.delays) if self.delays is not None else None,
                "jitter": self.effective_jitter, "retry_on": list(self.retry_on_names),
                "dont_retry_on": list(self.dont_retry_on_names)}


DEFAULT_POLICY = RetryPolicy()
