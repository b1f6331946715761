"""Enqueue options and their validation, in the caller, before anything is written.

:class:`EnqueueOptions` replaces nine loose keyword arguments: :func:`check_options` turns what a
caller passed into one validated value, raising a :class:`~core.errors.JobsError` that names the
option, the value received and what is accepted.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from core.config import get_settings
from core.errors import InvalidPayloadError, JobsError, PayloadTooLargeError
from core.flow import limits as job_limits
from core.platform import keys
from core.queue import groups
from core.queue.backoff import RetryPolicy
from core.queue.rq_compat import JOB_ID_PATTERN
from core.queue.task_registry import TaskSpec

PRIORITIES = keys.PRIORITIES  # claimed in this order on every queue, by every worker class
MAX_RETRIES_LIMIT = 25
MAX_UNIQUE_FOR = 30 * 86_400
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
USER_ID_RE = re.compile(r"[A-Za-z0-9_.@+:-]{1,128}")  # the one rule for a user id (the API checks it too)


class InvalidJobIdError(JobsError):
    code = "invalid_job_id"


def validate_job_id(job_id: Any) -> str:
    """Return ``job_id`` if it follows RQ 3's rule, else raise :class:`InvalidJobIdError` (HTTP 400)."""
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= 128 or not _JOB_ID_RE.fullmatch(job_id):
        raise InvalidJobIdError(
            f"malformed job id {str(job_id)[:80]!r}: expected 1-128 characters of letters, digits, '_' or '-'"
        )
    return job_id


def new_job_id() -> str:
    """A new run's id: 32 hex characters of 16 random bytes, the shape of ``uuid4().hex`` (RQ's
    rule holds), from one ``os.urandom`` call instead of building a UUID (about 2 µs less)."""
    return os.urandom(16).hex()


def validate_user_id(user_id: Any) -> str | None:
    if user_id is None:
        return None
    if isinstance(user_id, bool) or not isinstance(user_id, str | int):
        raise InvalidPayloadError(f"user_id must be a string or an integer, got {type(user_id).__name__}")
    text = str(user_id)
    if not USER_ID_RE.fullmatch(text):
        raise InvalidPayloadError(f"malformed user_id {text[:80]!r}: expected 1-128 letters, digits or _ . @ + : -")
    return text


_PLAIN_TYPES = (str, int, float, bool, type(None))  # a JSON round trip gives these back equal


def encode_payload(payload: Any, limit: int) -> dict[str, Any]:
    """The payload as the worker will receive it (JSON round trip), or a clear error."""
    return encode_payload_json(payload, limit)[0]


def encode_payload_json(payload: Any, limit: int) -> tuple[dict[str, Any], str]:
    """:func:`encode_payload`, and the payload's compact JSON (the enqueue writes it into the
    job's ``data`` without encoding it again). A flat payload of plain values (exact str, int,
    float, bool, None) comes back as a copy: the JSON round trip would give it back equal, and
    skipping the parse saves about 3 µs per enqueue."""
    if payload is None:
        return {}, "{}"
    if not isinstance(payload, dict):
        raise InvalidPayloadError(
            f"payload must be a JSON object (a dict of keyword arguments), got {type(payload).__name__}"
        )
    for key in payload:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidPayloadError(f"payload key {key!r} is not a valid keyword argument name")
    try:
        encoded = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayloadError(
            f"payload is not JSON-serialisable ({exc}); accepted: dict, list, str, int, float, bool, None"
        ) from exc
    size = len(encoded.encode())
    if size > limit:
        raise PayloadTooLargeError(
            f"payload is {size} bytes of JSON, over the {limit}-byte limit (JOBS_MAX_PAYLOAD_BYTES); "
            f"pass ids and references, not whole objects"
        )
    if all(type(value) in _PLAIN_TYPES for value in payload.values()):
        return dict(payload), encoded
    return json.loads(encoded), encoded  # tuples become lists, etc.


def _requested_time(delay: Any, at: Any) -> float | None:
    if delay is not None and at is not None:
        raise InvalidPayloadError("give either delay or at, not both")
    if delay is not None:
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, int | float) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise InvalidPayloadError(f"delay must be seconds (a number) or a timedelta, got {type(delay).__name__}")
        if seconds < 0 or seconds != seconds or seconds == math.inf:
            raise InvalidPayloadError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        return time.time() + seconds if seconds > 0 else None
    if at is not None:
        if not isinstance(at, datetime):
            raise InvalidPayloadError(f"at must be a datetime, got {type(at).__name__}")
        return (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)).timestamp()
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def expired_reason(expires_at: float) -> str:
    """What an expired job records as its error (claim.lua writes the same words)."""
    return f"expired: not started by {_iso(expires_at)} (its expires); it never ran"


def check_expires(expires: Any) -> None:
    """Raise :class:`InvalidPayloadError` unless ``expires`` is what :func:`expiry_time` takes."""
    expiry_time(expires, time.time(), check_past=False)


def expiry_time(expires: Any, now: float, *, check_past: bool = True) -> float | None:
    """``expires`` as epoch seconds: seconds after ``now`` (a number or a timedelta), or a datetime
    (naive means UTC, as ``at=``). None stays None. A time already past is refused."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        at = (expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)).timestamp()
        if check_past and at <= now:
            raise InvalidPayloadError(f"expires {_iso(at)} has already passed (now {_iso(now)}): the job could "
                                      f"never run; give a later datetime or seconds after enqueue")
        return at
    if isinstance(expires, timedelta):
        seconds = expires.total_seconds()
    elif isinstance(expires, int | float) and not isinstance(expires, bool):
        seconds = float(expires)
    else:
        raise InvalidPayloadError(f"expires must be seconds after enqueue (a number > 0), a timedelta or a datetime "
                                  f"(naive = UTC), got {type(expires).__name__} {str(expires)[:80]!r}")
    if not 0 < seconds < math.inf:
        raise InvalidPayloadError(f"expires must be a finite number of seconds > 0 after enqueue, got {expires!r}")
    return now + seconds


@dataclass(frozen=True)
class EnqueueOptions:
    """Validated options of one enqueue call (see :func:`check_options`)."""

    max_retries: int
    timeout: int
    run_at: float | None = None  # epoch seconds; None runs now
    priority: str = "normal"
    job_id: str | None = None
    user_id: str | None = None
    unique_for: int | None = None
    unique_key: str | None = None
    limits: job_limits.Limits = job_limits.Limits()  # the task's, with this call's overrides
    expires_at: float | None = None  # epoch seconds: not started by then, the job ends expired
    retry: RetryPolicy = RetryPolicy()  # the task's, with this call's retry_backoff/_jitter/_delays on top
    group: str | None = None  # the group key template (the call's, else the task's; core.queue.groups)
    group_concurrency: int | None = None
    group_declared: bool = False  # the template is the task's, not this call's

    def group_of(self, payload: dict[str, Any]) -> str | None:
        """The job's group for this payload (a template is filled from it, then from ``user_id``).

        A call's own ``group=`` must resolve (else a clear error). A task's declared template that
        this job cannot fill (a CRM update queued by the system, with no user) leaves the job
        ungrouped: it waits with the queue's other ungrouped jobs, one member of the rotation."""
        if self.group_declared:
            try:
                return groups.resolve_group(self.group, payload, self.user_id)
            except JobsError:
                return None
        return groups.resolve_group(self.group, payload, self.user_id)

    @cached_property
    def retry_field(self) -> str | None:
        """The job's ``fk_retry`` (None: the default policy); computed once per options value."""
        return self.retry.to_field()

    def limits_field(self, queue_short: str, task_name: str, payload: dict[str, Any]) -> str | None:
        """The job's ``fk_limits`` for this payload (a template key is filled from it, then from
        the job's ``user_id``; ``{group}`` names the job's group when the payload has no such field,
        so ``rate_key="{group}"`` gives each group its own budget)."""
        if not self.limits:
            return None
        if self.group is not None and "group" not in payload:
            group = self.group_of(payload)
            if group is not None:
                payload = {**payload, "group": group}
        return job_limits.job_limits(queue_short, task_name, self.limits, payload, self.user_id)


def check_options(
    spec: TaskSpec,
    *,
    max_retries: Any = None,
    delay: Any = None,
    at: Any = None,
    priority: Any = "normal",
    job_id: Any = None,
    user_id: Any = None,
    timeout: Any = None,
    unique_for: Any = None,
    unique_key: Any = None,
    rate_limit: Any = None,
    rate_key: Any = None,
    concurrency: Any = None,
    concurrency_key: Any = None,
    expires: Any = None,
    retry_backoff: Any = None,
    retry_jitter: Any = None,
    retry_delays: Any = None,
    group: Any = None,
    group_concurrency: Any = None,
) -> EnqueueOptions:
    """Every option checked, defaults filled from the task, then the queue's settings."""
    settings = get_settings()
    call_retry = RetryPolicy.declare(retry_backoff, retry_jitter, retry_delays)
    if max_retries is None and call_retry.delays is not None:
        max_retries = len(call_retry.delays)  # one retry per delay, as on a task
    if max_retries is None:
        max_retries = spec.max_retries if spec.max_retries is not None else settings.default_max_retries
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise InvalidPayloadError(f"max_retries must be a whole number from 0 to {MAX_RETRIES_LIMIT}, got {max_retries!r}")
    if priority not in PRIORITIES:
        raise InvalidPayloadError(f"unknown priority {priority!r}; accepted: {', '.join(PRIORITIES)}")
    if timeout is None:
        timeout = settings.timeout_for(spec.queue)
    elif isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise InvalidPayloadError(f"timeout must be a positive whole number of seconds, got {timeout!r}")
    if job_id is not None:
        validate_job_id(job_id)
    if unique_for is not None and (isinstance(unique_for, bool) or not isinstance(unique_for, int)
                                   or not 1 <= unique_for <= MAX_UNIQUE_FOR):
        raise InvalidPayloadError(f"unique_for must be a whole number of seconds from 1 to {MAX_UNIQUE_FOR}, "
                                  f"got {unique_for!r}")
    if unique_key is not None:
        if unique_for is None:
            raise InvalidPayloadError("unique_key needs unique_for (the window, in seconds)")
        if not isinstance(unique_key, str) or not 1 <= len(unique_key) <= 200:
            raise InvalidPayloadError(f"unique_key must be a string of 1-200 characters, got {str(unique_key)[:80]!r}")
    run_at = _requested_time(delay, at)
    if run_at is not None:
        run_at = float(math.ceil(run_at))
    expires_at = _expires_at(expires if expires is not None else spec.expires, run_at)
    limits = job_limits.merge(spec.limits, job_limits.check_limits(rate_limit, rate_key, concurrency, concurrency_key,
                                                                   declared=spec.limits))
    group_template = groups.check_group_template(group) if group is not None else spec.group
    if group_concurrency is None:
        group_concurrency = spec.group_concurrency
    group_concurrency = groups.check_group_concurrency(group_concurrency, group_template)
    return EnqueueOptions(
        max_retries=max_retries, timeout=timeout,
        run_at=run_at,
        priority=priority, job_id=job_id, user_id=validate_user_id(user_id),
        unique_for=unique_for, unique_key=unique_key, limits=limits, expires_at=expires_at,
        retry=spec.retry.override(call_retry), group=group_template, group_concurrency=group_concurrency,
        group_declared=group is None and group_template is not None,
    )


_defaults: dict[int, tuple[TaskSpec, Any, EnqueueOptions]] = {}


def is_default(option_values: dict[str, Any]) -> bool:
    """Whether an enqueue passed no option at all (every value None, priority ``normal``)."""
    for name, value in option_values.items():
        if value is not None and (name != "priority" or value != "normal"):
            return False
    return True


def default_options(spec: TaskSpec) -> EnqueueOptions:
    """``check_options(spec)`` with no option given, what nearly every enqueue passes: checked
    once per task and settings instead of at every call (about 20 µs; issue 22 item 5). A task
    with an ``expires`` is checked every time: its expiry counts from now."""
    settings = get_settings()
    cached = _defaults.get(id(spec))
    if cached is not None and cached[0] is spec and cached[1] is settings:
        return cached[2]
    options = check_options(spec)
    if spec.expires is None:
        _defaults[id(spec)] = (spec, settings, options)
    return options


def _expires_at(expires: Any, run_at: float | None) -> float | None:
    """The job's expiry (epoch s), checked against when it may first run."""
    expires_at = expiry_time(expires, time.time())
    if expires_at is not None and run_at is not None and expires_at <= run_at:
        raise InvalidPayloadError(f"expires {_iso(expires_at)} is not after the job's run time {_iso(run_at)} "
                                  f"(delay/at): it would expire before it may start; give a later expires "
                                  f"(seconds count from enqueue, not from the run time)")
    return expires_at
