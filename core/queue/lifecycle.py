"""The one job lifecycle: every state change of a Redis job goes through a function here.

Transitions and who calls them::

    enqueue ──► pending ──claim──► running ──finish──► completed | failed
       │           ▲                  │  └──finish(retry)──► delayed/pending (retrying)
       └► delayed ─┘ promote_due      └──abandon (lease expired / cold stop)──► pending | failed
    pending|delayed ──cancel──► canceled        failed ──requeue──► pending
    anything but running ──delete──► gone       ended ──(TTL)──► expired (registries swept)
    pending ──claim over a limit──► parked (delayed, with its reason) ──release_limits──► pending
    pending ──claim after its expires──► expired (RQ's "canceled" + fk_expired; never ran)
    running ──finish(defer: RetryAfter)──► delayed (uncounted)   running ──stop──► canceled
    pending ──enqueue with depends_on──► delayed (waiting) ──its dependencies end──► pending | canceled

Each transition is one Lua script (``core/queue/lua``) that changes the job hash, its registries, the
queue's counters and the events stream together, so stats, task metrics, registries and events
cannot disagree, and a SIGKILL or Redis restart between two of those writes cannot happen. What a
job's end sets off (callbacks, dependents, a batch's count: ``hooks_lib.lua``) happens in the
same script. The log line for each attempt is written here too. Workers (every class), the sweep,
the API, CLI and dashboard actions all call these functions; nothing else writes these keys.

Measured cost per processed no-op job (two simple workers, prefetch 10; ``bench.limiter``): 8.8
Redis commands inside the claim and finish scripts, 2 of them the events stream's XADDs and 1
the hooks check; a rate limit adds about 4, a concurrency limit about 7. See docs/BENCHMARKS.md.
The default worker records ends and claims in one call (:func:`finish_and_claim`): 11.75
commands per job with RQ's result record (issue 22, 8,000 no-ops; docs/BENCHMARKS.md).
What RQ's own tools read costs 3 more per job (``bench.rq_tools_cost``): the SADD to ``rq:queues``
in enqueue, and RQ's result record (XADD, EXPIRE) in a final end.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from core.config import get_settings
from core.errors import DurabilityError
from core.flow import limits
from core.platform import keys
from core.platform.cluster import plain_pipeline
from core.queue import lua_scripts, task_metrics, task_registry
from core.queue.backoff import DEFAULT_POLICY, RetryPolicy
from core.queue.rq_compat import (
    RESULT_FAILED,
    RESULT_SUCCESSFUL,
    call_description,
    decode_data,
    encode_data,
    epoch_to_rq_time,
    format_time,
    parse_time,
    result_exc_string,
    result_return_value,
)

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000
LIVE_STATUSES = ("queued", "scheduled", "started", "deferred")

# Outcomes of one attempt, as logged and counted ("<task>:<outcome>" in the queue counters).
COMPLETED = "completed"
DEFERRED = "deferred"  # the task asked to run later (RetryAfter): not a failure, not an attempt
STOPPED = "canceled"  # someone stopped it while it ran (counter "canceled")
FAILED = "failed"  # final: no attempts left, or not retryable
RETRYING = "retrying"  # failed; another attempt is scheduled (counter "retried")
ABANDONED = "abandoned"  # its worker died: a stall (counted in addition to stalled/failed)


def short_name(full_queue_name: str) -> str:
    """``fikiri:email`` -> ``email``."""
    return get_settings().short_queue_name(full_queue_name)


def full_name(queue_short: str) -> str:
    return get_settings().full_queue_name(queue_short)


# --- enqueue -----------------------------------------------------------------------------------
@dataclass
class NewJob:
    """One run to create: what :func:`enqueue` writes for it."""

    job_id: str
    task_name: str
    kwargs: dict[str, Any]
    max_retries: int
    timeout: int
    run_at: float | None = None  # epoch seconds; None: now
    priority: str = "normal"
    check_existing: bool = False  # a caller-chosen id: no-op while a live run holds it
    unique_key: str | None = None
    unique_for: int | None = None
    result_ttl: int | None = None  # None: JOBS_RESULT_TTL
    failure_ttl: int | None = None  # None: JOBS_FAILURE_TTL
    extra_fields: list[Any] = field(default_factory=list)  # more hash fields (periodic templates' meta)
    retries: int = 0  # retries already used (a job handed back from the fallback spool)
    only_if_absent: bool = False  # write nothing if the id is in Redis at all (idempotent hand-back)
    limits: str | None = None  # fk_limits: the job's rate/concurrency limits (core.flow.limits.job_limits)
    depends_on: list[str] | None = None  # ids it waits for (core/workflows/chains.py)
    dependency_policy: str = "cancel"  # a dependency failed or was canceled: cancel this job, or "run" it
    pass_result: str | None = None  # a completed dependency's result goes into the payload under this name
    expires_at: float | None = None  # fk_expires (epoch s): a claim after it ends the job expired (claim.lua)
    retry_policy: str | None = None  # fk_retry: the job's retry policy as JSON (core.queue.backoff); None: default
    max_stalls: int = 1  # fk_mstalls (written only when not 1): lost attempts allowed before a repeat crash fails it
    stalls: int = 0  # fk_stalls: attempts already lost to crashes (a job handed back from the fallback spool)
    group: str | None = None  # fk_group: the job's group (resolved), served round-robin (core/queue/groups.py)
    group_concurrency: int | None = None  # fk_gconc: at most this many of its group's jobs run at once
    kwargs_json: str | None = None  # the payload's compact JSON when the caller has it (not encoded again)

    def fields(self, queue: str, user: str | None, now: str) -> list[Any]:
        """The job hash's fields (``data`` is passed separately: it may be binary)."""
        settings = get_settings()
        out: list[Any] = [
            "status", "scheduled" if self.run_at is not None else "queued",
            "created_at", now,
            "enqueued_at", now,  # RQ's tools show when it was enqueued; promote.lua moves it to when it became due
            "description", call_description(self.task_name, self.kwargs),
            "origin", queue,
            "timeout", self.timeout,
            "result_ttl", self.result_ttl or settings.result_ttl,
            "failure_ttl", self.failure_ttl or _failure_ttl(settings, queue),
            "fk_task", self.task_name,
            "fk_max", self.max_retries,
        ]
        if user is not None:
            out += ["fk_user", user]
        if self.priority != "normal":
            out += ["fk_prio", self.priority]
        if self.retries:
            out += ["fk_retries", self.retries]
        if self.limits:
            out += ["fk_limits", self.limits]
        if self.expires_at is not None:
            out += ["fk_expires", repr(self.expires_at)]
        if self.retry_policy:
            out += ["fk_retry", self.retry_policy]
        if self.max_stalls != 1:
            out += ["fk_mstalls", self.max_stalls]
        if self.stalls:
            out += ["fk_stalls", self.stalls]
        if self.group is not None:
            out += ["fk_group", self.group]
            if self.group_concurrency is not None:
                out += ["fk_gconc", self.group_concurrency]
        if self.depends_on:
            out += ["fk_dep_policy", self.dependency_policy]
            if self.pass_result:
                out += ["fk_pass", self.pass_result]
        return out + self.extra_fields


def _failure_ttl(settings: Any, queue: str) -> int:
    return settings.failure_ttl_for(settings.short_queue_name(queue))


_enqueue_keys: dict[str, tuple[Any, list[str]]] = {}


def _script_keys(settings: Any, queue_short: str, queue: str) -> list[str]:
    """enqueue.lua's KEYS for a queue, built once per queue and settings (they never change between calls)."""
    cached = _enqueue_keys.get(queue_short)
    if cached is not None and cached[0] is settings:
        return cached[1]
    names = [keys.queue(queue), keys.scheduled(queue), keys.queue_counters(queue_short), keys.wake(queue),
             keys.finished(queue), keys.failed(queue), keys.canceled(queue), keys.users_with_jobs(),
             keys.queue_at(queue, "high"), keys.queue_at(queue, "low"), keys.all_queues()]
    _enqueue_keys[queue_short] = (settings, names)
    return names


def _entry(queue: str, job: NewJob, fields: list[Any], user: str | None) -> dict[str, Any]:
    """One job of enqueue.lua's request. What is null or false is left out (the script reads a
    missing key as nil): a smaller request to encode and for the script to decode."""
    entry: dict[str, Any] = {"id": job.job_id, "key": keys.job(job.job_id), "results": keys.results(job.job_id),
                             "fields": fields, "prio": job.priority}
    if job.group is not None:
        entry.update(_group_entry(queue, job))
    if job.run_at is not None:
        entry["run_at"] = job.run_at
    if job.check_existing:
        entry["check"] = True
    if job.only_if_absent:
        entry["absent"] = True
    if job.unique_key is not None:
        entry.update(unique=job.unique_key, unique_ttl=job.unique_for)
    if user is not None:
        entry["user_key"] = keys.user_jobs(user)
    if job.depends_on:
        entry.update(deps=job.depends_on, policy=job.dependency_policy)
        if job.pass_result is not None:
            entry["pass"] = job.pass_result
    return entry


def enqueue(connection: Any, queue_short: str, jobs: list[NewJob], user: str | None = None,
            batch: dict[str, Any] | None = None) -> list[str]:
    """Create ``jobs`` on one queue (one script call); returns the id each one resolved to.

    ``batch``: ``{"key", "fields"}`` of a batch hash to create with its members (core/workflows/chains.py).
    What does not change between calls (the script's keys, its SHA) is computed once. A single plain
    job (:func:`_is_plain`) goes to enqueue_plain.lua with flat arguments; our Python of such an
    enqueue is about 20 µs, redis-py's send and read about 50 µs of CPU more (issue 22 item 5,
    docs/BENCHMARKS.md)."""
    if not jobs:
        return []
    settings = get_settings()
    queue = settings.full_queue_name(queue_short)
    now = format_time()
    if batch is None and len(jobs) == 1 and _is_plain(jobs[0]):
        return _enqueue_plain(connection, settings, queue_short, queue, jobs[0], user, now)
    entries = []
    blobs: list[bytes] = []  # each job's data, binary-safe in ARGV (it may be zlib'd)
    for job in jobs:
        # a result passed in by a dependency is spliced into the JSON by the script: never compressed
        blobs.append(encode_data(job.task_name, job.kwargs, compress=job.pass_result is None,
                                 kwargs_json=job.kwargs_json))
        entries.append(_entry(queue, job, job.fields(queue, user, now), user))
    request = {"counter": f"{jobs[0].task_name}:enqueued", "jobs": entries, "task": jobs[0].task_name,
               "queue": queue_short, "events": keys.events(), "maxlen": settings.events_maxlen}
    if user is not None:
        request.update(user=user, user_size=settings.user_index_size, user_ttl=settings.user_index_ttl)
    if batch is not None or any(job.depends_on for job in jobs):
        now_s = time.time()
        request.update({"layout": json.loads(layout_json()), "batch": batch, "now": epoch_to_rq_time(now_s),
                        "now_s": now_s, "failure_ttl": settings.failure_ttl})
    script_keys = _script_keys(settings, queue_short, queue)
    script_args = [json.dumps(request, separators=(",", ":")), *blobs]
    return _run_enqueue(connection, "enqueue", script_keys, script_args, settings)


def _run_enqueue(connection: Any, script: str, script_keys: list[str], script_args: list[Any], settings: Any,
                 ) -> list[str]:
    if settings.enqueue_durability == "none":
        replies = lua_scripts.run(script, connection, script_keys, script_args)
    else:
        replies = _enqueue_durably(connection, script, script_keys, script_args, settings)
    return [r.decode() if isinstance(r, bytes) else r for r in replies]


def _is_plain(job: NewJob) -> bool:
    """Whether enqueue_plain.lua can create ``job``: no id of the caller's (nothing to check), no
    unique window, no dependencies and no group."""
    return not (job.check_existing or job.only_if_absent or job.unique_key is not None or job.depends_on
                or job.group is not None or job.pass_result is not None)


def _enqueue_plain(connection: Any, settings: Any, queue_short: str, queue: str, job: NewJob, user: str | None,
                   now: str) -> list[str]:
    """One plain job through enqueue_plain.lua: flat arguments, no JSON request to encode or decode."""
    delayed = job.run_at is not None
    script_keys = [keys.job(job.job_id), keys.scheduled(queue) if delayed else keys.queue_at(queue, job.priority),
                   keys.queue_counters(queue_short), keys.wake(queue), keys.all_queues(), keys.queue(queue),
                   keys.events()]
    if user is not None:
        script_keys += [keys.users_with_jobs(), keys.user_jobs(user)]
    script_args = [job.job_id, encode_data(job.task_name, job.kwargs, kwargs_json=job.kwargs_json),
                   repr(job.run_at) if delayed else "", f"{job.task_name}:enqueued", queue_short, job.task_name,
                   settings.events_maxlen, user or "", settings.user_index_size, settings.user_index_ttl,
                   *job.fields(queue, user, now)]
    return _run_enqueue(connection, "enqueue_plain", script_keys, script_args, settings)


def _enqueue_durably(connection: Any, script: str, script_keys: list[str], script_args: list[Any],
                     settings: Any) -> Any:
    """The enqueue script, then WAIT 1 on the same connection (one pipeline: WAIT covers the writes
    of the connection it is sent on). Raises DurabilityError when no replica confirms within
    JOBS_ENQUEUE_DURABILITY_TIMEOUT. Cost: one replication round trip per enqueue (bench.durability)."""
    timeout_ms = max(1, int(settings.enqueue_durability_timeout * 1000))
    with plain_pipeline(connection) as pipe:  # WAIT inside a cluster-mode transaction would not wait
        lua_scripts.run(script, pipe, script_keys, script_args)
        pipe.execute_command("WAIT", 1, timeout_ms)
        replies, acked = pipe.execute()
    if int(acked) < 1:
        ids = ", ".join(r.decode() if isinstance(r, bytes) else str(r) for r in replies)
        raise DurabilityError(
            f"JOBS_ENQUEUE_DURABILITY={settings.enqueue_durability}: no replica confirmed the enqueue of job {ids} "
            f"within {settings.enqueue_durability_timeout:g}s (WAIT 1 answered 0 replicas; is one connected and in "
            f"sync?). The job is written on the primary and may run, but a failover now could lose it. Accepted "
            f"values: none, replica; JOBS_ENQUEUE_DURABILITY_TIMEOUT (s) sets the wait")
    return replies


def _group_entry(queue: str, job: NewJob) -> dict[str, Any]:
    """enqueue.lua's fields for a grouped job: its group's waiting list and the rotation it joins."""
    if job.group is None:
        return {}
    return {"group": job.group, "glist": keys.group_waiting(queue, job.priority, job.group),
            "grot": keys.group_rotation(queue, job.priority)}


@dataclass
class ImportedOutcome:
    """A job that ended in the fallback, to be written into Redis by :func:`import_outcomes`."""

    job_id: str
    queue: str  # short name
    task_name: str
    kwargs: dict[str, Any]
    status: str  # completed | failed | canceled | expired
    result_json: str | None
    error: str | None
    retries: int
    max_retries: int
    user_id: str | None
    created_at: float
    started_at: float | None
    completed_at: float
    expires_at: float | None = None
    retry_policy: str | None = None  # fk_retry, kept for the job's view
    group: str | None = None  # fk_group, kept for the job's view (it waits in no group: it has ended)


def import_outcomes(connection: Any, outcomes: list[ImportedOutcome]) -> int:
    """Write ended fallback jobs into Redis (one script call); ids already there are left alone."""
    settings = get_settings()
    entries = []
    for o in outcomes:
        full = full_name(o.queue)
        ttl = settings.result_ttl if o.status == "completed" else settings.failure_ttl_for(o.queue)
        status = {"completed": "finished", "failed": "failed", "canceled": "canceled", "expired": "canceled"}[o.status]
        fields: list[Any] = [
            "status", status, "created_at", epoch_to_rq_time(o.created_at),
            "enqueued_at", epoch_to_rq_time(o.created_at), "description", call_description(o.task_name, o.kwargs),
            "data", encode_data(o.task_name, o.kwargs, compress=False).decode(),
            "origin", full, "ended_at", epoch_to_rq_time(o.completed_at), "result_ttl", settings.result_ttl,
            "failure_ttl", settings.failure_ttl_for(o.queue), "fk_task", o.task_name, "fk_max", o.max_retries,
            "fk_retries", o.retries, "fk_mode", "fallback",
        ]
        if o.started_at:
            fields += ["started_at", epoch_to_rq_time(o.started_at)]
        if o.user_id:
            fields += ["fk_user", o.user_id]
        if o.result_json is not None:
            fields += ["fk_result", o.result_json]
        if o.error:
            fields += ["fk_error", o.error[-MAX_ERROR_CHARS:]]
        if o.expires_at is not None:
            fields += ["fk_expires", repr(o.expires_at)]
        if o.status == "expired":  # RQ's "canceled" plus our field (core/queue/job_model.py reads it back)
            fields += ["fk_expired", "1"]
        if o.retry_policy:
            fields += ["fk_retry", o.retry_policy]
        if o.group:
            fields += ["fk_group", o.group]
        registry = {"completed": keys.finished, "failed": keys.failed, "canceled": keys.canceled,
                    "expired": keys.canceled}[o.status](full)
        entries.append({
            "key": keys.job(o.job_id), "registry": registry, "counters": keys.queue_counters(o.queue),
            "fields": fields, "id": o.job_id, "ttl": ttl, "expiry": time.time() + ttl, "task": o.task_name,
            "event": o.status, "retries": o.retries, "queue": o.queue,
            "user_key": keys.user_jobs(o.user_id) if o.user_id else None, "user": o.user_id,
            "queue_key": keys.queue(full), "results": keys.results(o.job_id), **_imported_result(o),
            "detail": f"in the fallback: {o.error}"[:300] if o.status == "expired" else None,
        })
    request = {"users": keys.users_with_jobs(), "queues": keys.all_queues(), "user_size": settings.user_index_size,
               "user_ttl": settings.user_index_ttl, "entries": entries, "events": keys.events(),
               "maxlen": settings.events_maxlen}
    return int(lua_scripts.run("import", connection, [], [json.dumps(request, separators=(",", ":"))]))


def _imported_result(o: ImportedOutcome) -> dict[str, Any]:
    """RQ's result record of a job that ended in the fallback (import.lua); none for a canceled one."""
    if o.status == "completed":
        return {"rq_type": RESULT_SUCCESSFUL, "rv": result_return_value(o.result_json)}
    if o.status == "failed":
        return {"rq_type": RESULT_FAILED, "rx": result_exc_string((o.error or "failed")[-MAX_ERROR_CHARS:])}
    return {}


# --- claim -------------------------------------------------------------------------------------
@dataclass
class ClaimedJob:
    """A job a worker holds: its lease is ``member`` in the queue's in-flight registry."""

    job_id: str
    claim: str
    queue: str  # full name
    task_name: str
    kwargs: dict[str, Any]
    timeout: int
    max_retries: int
    retries: int
    manual_retries: int
    user_id: str | None
    result_ttl: int
    failure_ttl: int
    priority: str
    created_at: float | None
    claimed_at: float = field(default_factory=time.time)
    undecodable: str | None = None  # why the job's data could not be read (it will be refused)
    ahead: bool = False  # claimed ahead (prefetch), not begun: its start is written when a slot takes it
    finish_here: bool = False  # a pre-forked child records this job's end itself (no backlog: nothing to batch)
    trace: dict[str, Any] | None = None  # the enqueue span's context (core.platform.tracing), when tracing is on
    held: list[str] = field(default_factory=list)  # concurrency limiters whose permit this claim holds
    deferrals: int = 0  # RetryAfter deferrals so far
    stop_reason: str | None = None  # set when someone stopped it while it ran ("stopped by <who>")
    retry_policy: str | None = None  # fk_retry (JSON); None: the task's policy (core.queue.backoff)
    requeue_reason: str | None = None  # a shutdown's deadline passed: interrupt it, requeue it (no retry, no stall)
    interrupted: bool = False  # it was interrupted (or never started) for requeue_reason: its end is a requeue
    group: str | None = None  # fk_group: finish.lua gives its running count back

    @property
    def member(self) -> str:
        return f"{self.job_id}:{self.claim}"

    @property
    def queue_short(self) -> str:
        return short_name(self.queue)

    def to_wire(self) -> dict[str, Any]:
        """Plain data for a pre-forked child (sent as JSON over a pipe)."""
        return self.__dict__.copy()

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ClaimedJob:
        return cls(**data)


def _trace(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _int(raw: Any, default: int = 0) -> int:
    try:
        return int(raw) if raw is not None else default
    except (TypeError, ValueError):
        return default


def _text(raw: Any) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


_LAYOUT: dict[str, str] = {}


_LAYOUT_FOR: list[Any] = [None, ""]  # (the settings object, its layout JSON): settings reloaded -> rebuilt


def layout_json() -> str:
    """Key prefixes for scripts that build keys from a job's origin, and the events stream's
    bound (cached per process, prefix and bound; per settings object, so a busy worker builds it
    once, not twice per script call)."""
    settings = get_settings()
    if _LAYOUT_FOR[0] is settings:
        return _LAYOUT_FOR[1]
    _LAYOUT_FOR[1] = _layout_json()
    _LAYOUT_FOR[0] = settings
    return _LAYOUT_FOR[1]


def _layout_json() -> str:
    layout: dict[str, Any] = keys.lua_layout()
    maxlen = get_settings().events_maxlen
    key = f"{layout['job']}{layout['wake']}{maxlen}"
    if key not in _LAYOUT:
        _LAYOUT[key] = json.dumps({**layout, "maxlen": maxlen}, separators=(",", ":"))
    return _LAYOUT[key]


def _events() -> list[Any]:
    """The events stream and its bound, as the scripts take them (events_lib.lua)."""
    return [keys.events(), get_settings().events_maxlen]


_QUEUE_LIMITS: dict[tuple[str, str], str] = {}


def queue_limit_entry(queue: str) -> str:
    """The queue-wide rate limit (full or short queue name) as claim.lua and the fallback's claim
    take it; parsed once per setting's text (every claim call passes it)."""
    settings = get_settings()
    short = short_name(queue)
    key = (short, getattr(settings, f"rate_limit_{short}", ""))
    if key not in _QUEUE_LIMITS:
        _QUEUE_LIMITS[key] = limits.queue_limit(short, settings.queue_rate_limit(short))
    return _QUEUE_LIMITS[key]


CLAIM_FIELDS = 20  # per job in claim.lua's reply


class ClaimBatch(list):
    """The jobs of one claim, plus when a limiter it touched lets its next parked job run, and the
    jobs it ended expired instead of starting them: ``(job_id, task, full queue name)``."""

    due_in: float | None = None
    expired: list[tuple[str, str, str]] = []


def claim_args(worker_name: str, claim_prefix: str, queues: list[str], limit: int, lease_seconds: float,
               chain_wakeup: bool = False, start: int | None = None, server_clock: bool = False) -> list[Any]:
    """claim.lua's arguments. ``start``: how many of the claimed jobs begin now (the rest are claimed
    ahead: ``fk_claimed``); None: all. ``server_clock``: the lease and started_at come from Redis'
    clock when the script runs (a claim pipelined behind a blocking pop that may wait a while)."""
    count = str(limit) if start is None or start >= limit else f"{limit}/{max(0, start)}"
    expiry, started = ("", "") if server_clock else (time.time() + lease_seconds, format_time())
    return [count, expiry, started, worker_name, claim_prefix, "1" if chain_wakeup else "0", lease_seconds,
            *_claim_tail(tuple(queues))]


_CLAIM_TAIL: dict[tuple[str, ...], tuple[Any, list[Any]]] = {}


def _claim_tail(queues: tuple[str, ...]) -> list[Any]:
    """claim.lua's arguments from ARGV[8] on: the same for every claim of a worker (built once per
    settings object; a busy worker claims thousands of times a second)."""
    settings = get_settings()
    cached = _CLAIM_TAIL.get(queues)
    if cached is not None and cached[0] is settings:
        return cached[1]
    tail: list[Any] = [layout_json(), keys.paused_queues(), keys.job_prefix(), *_events()]
    for queue in queues:
        tail += [queue, *keys.queue_lists(queue), keys.started(queue), keys.wake(queue), queue_limit_entry(queue),
                 *(keys.group_rotation(queue, p) for p in keys.PRIORITIES)]
    _CLAIM_TAIL[queues] = (settings, tail)
    return tail


def claim(connection: Any, worker_name: str, claim_prefix: str, queues: list[str], limit: int,
          lease_seconds: float, chain_wakeup: bool = False, start: int | None = None) -> ClaimBatch:
    """Claim up to ``limit`` jobs from ``queues`` (full names, in order; on each, high, normal
    then low priority), one script call. Paused queues are skipped; jobs over a limit are parked.

    ``chain_wakeup``: the worker was just woken; if the batch comes back full, wake another one.
    ``start``: how many begin now; the others are claimed ahead (see :func:`claim_args`).
    """
    args = claim_args(worker_name, claim_prefix, queues, limit, lease_seconds, chain_wakeup, start)
    return parse_claim(lua_scripts.run("claim", connection, [], args), queues, start)


def parse_claim(reply: Any, queues: list[str], start: int | None = None) -> ClaimBatch:
    """The :class:`ClaimBatch` of claim.lua's reply ``[jobs, due, expired]``; the jobs past the
    first ``start`` are marked claimed ahead."""
    flat, due, ended = reply
    claimed = ClaimBatch()
    claimed.due_in = float(due) if due else None
    claimed.expired = [(_text(ended[i]), _text(ended[i + 1]) or "?", queues[int(ended[i + 2])])
                       for i in range(0, len(ended), 3)]
    for job_id, task, queue in claimed.expired:
        logger.warning("job %s task=%s queue=%s outcome=expired: not started before its expires, never ran",
                       job_id, task, short_name(queue))
    settings = get_settings()
    for i in range(0, len(flat), CLAIM_FIELDS):
        (job_id, claim_id, queue_index, data, timeout, task, max_retries, retries, manual, user,
         result_ttl, failure_ttl, prio, created, _claimed, trace, job_limits, deferrals,
         retry_policy, group) = flat[i:i + CLAIM_FIELDS]
        queue = queues[int(queue_index)]
        undecodable = None
        try:
            task_name, kwargs = decode_data(data)
        except Exception as exc:  # written by something else; refused when run, never a crash
            task_name, kwargs, undecodable = _text(task) or "<undecodable>", {}, f"undecodable job data ({exc})"
        if task is not None and _text(task) != task_name:
            undecodable = f"job data names {task_name!r} but the job was enqueued for {_text(task)!r}"
        claimed.append(ClaimedJob(
            job_id=_text(job_id), claim=_text(claim_id), queue=queue, task_name=task_name, kwargs=kwargs,
            timeout=_int(timeout, settings.timeout_for(short_name(queue))), max_retries=_int(max_retries),
            retries=_int(retries), manual_retries=_int(manual), user_id=_text(user),
            result_ttl=_int(result_ttl, settings.result_ttl), failure_ttl=_int(failure_ttl, settings.failure_ttl),
            priority=_text(prio) or "normal", created_at=parse_time(created), undecodable=undecodable,
            ahead=start is not None and i // CLAIM_FIELDS >= start,
            trace=_trace(trace), held=limits.held_permits(job_limits),
            deferrals=_int(deferrals), retry_policy=_text(retry_policy), group=_text(group),
        ))
    return claimed


# --- finish ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttemptResult:
    """What running a job produced (see :mod:`core.execution.runner`)."""

    ok: bool
    result_json: str = "null"  # the JSON of the return value, when ok
    error: str | None = None  # the traceback or reason, when not ok
    retryable: bool = True  # False: another attempt would fail the same way (refused, non-JSON)
    duration: float = 0.0
    defer: float | None = None  # RetryAfter: run again after this many seconds, not counted as an attempt


def finish(connection: Any, job: ClaimedJob, attempt: AttemptResult, worker_name: str = "") -> str | None:
    """Record one attempt's end; returns the outcome, or None if the lease was lost meanwhile.

    A lost lease means the sweep judged this worker dead and already took the job back (it may
    be running elsewhere): the attempt's result is dropped, never written over the new run.
    """
    return finish_many(connection, [(job, attempt)], worker_name)[0]


@dataclass(frozen=True)
class AttemptOutcome:
    """What an attempt's end means for its job."""

    kind: str  # "done" | "defer" | "retry" | "fail" (finish also has "stop": the job was stopped)
    delay: float = 0.0  # defer, retry: seconds until the job may run again
    error: str | None = None  # what the job records: the traceback, or the deferral's cause
    reason: str | None = None  # defer: what the job shows while it waits


def retry_policy_of(stored: str | None, queue_short: str, task_name: str) -> RetryPolicy:
    """The retry policy a job's next attempt waits by: the one it carries (``fk_retry``), else its
    task's as registered here (a job written without one: a callback, a periodic run), else the
    default (the settings' back-off with full jitter)."""
    policy = RetryPolicy.from_field(stored)
    if policy is not None:
        return policy
    spec = task_registry.get(queue_short, task_name)
    return spec.retry if spec is not None else DEFAULT_POLICY


def attempt_outcome(attempt: AttemptResult, retries: int, max_retries: int, deferrals: int,
                    policy: RetryPolicy = DEFAULT_POLICY) -> AttemptOutcome:
    """The one rule for an attempt's end, used by the workers (finish) and the fallback alike.

    A success is done. A Retry-After is a deferral, using no retry, up to ``JOBS_MAX_DEFERRALS``
    (then the job fails, saying so). A retryable error retries while retries are left, after the
    wait ``policy`` gives (back-off or schedule, with its jitter). Anything else fails."""
    if attempt.ok:
        return AttemptOutcome("done")
    settings = get_settings()
    if attempt.defer is not None and deferrals < settings.max_deferrals:
        delay = min(max(attempt.defer, 0.0), settings.max_retry_after)
        reason = f"retry after {delay:g}s: {_last_line(attempt.error) or 'the task asked to run later'}"[:500]
        return AttemptOutcome("defer", delay, attempt.error or "deferred", reason)
    error = (attempt.error or "failed")[-MAX_ERROR_CHARS:]
    if attempt.defer is not None:
        return AttemptOutcome("fail", 0.0, f"{error}\n(deferred {deferrals} times by Retry-After, the most allowed: "
                                           f"JOBS_MAX_DEFERRALS={settings.max_deferrals})")
    if attempt.retryable and retries < max_retries:
        delay = policy.delay(retries)
        return AttemptOutcome("retry", delay, error, retry_reason(policy, retries, max_retries, delay))
    return AttemptOutcome("fail", 0.0, error)


def retry_reason(policy: RetryPolicy, retries: int, max_retries: int, delay: float) -> str:
    """What a job shows while its retry waits: ``retry 2 of 3 in 3.172s (back-off 4s, full jitter)``."""
    return f"retry {retries + 1} of {max_retries} in {delay:g}s ({policy.describe_wait(retries)})"


def _finish_entry(job: ClaimedJob, attempt: AttemptResult, now: float) -> tuple[dict[str, Any], str, str | None]:
    """What finish.lua writes for one attempt: (entry, outcome, error text or None)."""
    queue = job.queue
    decided = AttemptOutcome("stop") if job.stop_reason is not None else attempt_outcome(
        attempt, job.retries, job.max_retries, job.deferrals, _policy_if_needed(job, attempt))
    value, reason = decided.error, decided.reason
    if decided.kind == "stop":
        mode, outcome, target, counter = "stop", STOPPED, keys.canceled(queue), "canceled"
        score, ttl, value = now + job.failure_ttl, job.failure_ttl, job.stop_reason
    elif decided.kind == "done":
        mode, outcome, target = "done", COMPLETED, keys.finished(queue)
        score, ttl, value, counter = now + job.result_ttl, job.result_ttl, attempt.result_json, "completed"
    elif decided.kind == "defer":
        mode, outcome, target, counter = "defer", DEFERRED, keys.scheduled(queue), "deferred"
        score, ttl = now + decided.delay, 0
    elif decided.kind == "retry":
        outcome, counter, ttl = RETRYING, "retried", 0
        if decided.delay > 0:
            mode, target, score = "retry", keys.scheduled(queue), now + decided.delay
        else:
            mode, target, score = "requeue", keys.queue_at(queue, job.priority), 0
    else:
        mode, outcome, target, counter = "fail", FAILED, keys.failed(queue), "failed"
        score, ttl = now + job.failure_ttl, job.failure_ttl
    entry = {
        "job": keys.job(job.job_id), "wip": keys.started(queue), "target": target, "canceled": keys.canceled(queue),
        "counters": keys.queue_counters(job.queue_short), "wake": keys.wake(queue),
        "member": job.member, "id": job.job_id,
        "task": job.task_name, "q": job.queue_short, "user": job.user_id, "mode": mode, "score": score, "ttl": ttl, "fttl": job.failure_ttl,
        "counter": f"{job.task_name}:{counter}", "value": value, "reason": reason,
        "retries": job.retries + (1 if outcome == RETRYING else 0), "deferrals": job.deferrals + 1,
        "held": job.held or None, "results": keys.results(job.job_id),
    }
    if job.group is not None:  # finish.lua gives the group's running count back with the lease
        entry["group"], entry["grun"] = job.group, keys.group_running(queue)
    # RQ's result record of a final end (rq_lib.lua), encoded here: Lua has no zlib
    if mode == "done":
        entry["rv"] = result_return_value(value)
    elif mode in ("fail", "stop"):
        entry["rx"] = result_exc_string(value)
    return entry, outcome, None if attempt.ok and mode != "stop" else value


def _policy_if_needed(job: ClaimedJob, attempt: AttemptResult) -> RetryPolicy:
    """The job's retry policy when the attempt may retry (a success or a final failure needs none)."""
    if attempt.ok or not attempt.retryable or attempt.defer is not None or job.retries >= job.max_retries:
        return DEFAULT_POLICY
    return retry_policy_of(job.retry_policy, job.queue_short, job.task_name)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def finish_many(connection: Any, finished: list[tuple[ClaimedJob, AttemptResult]],
                worker_name: str = "", starts: list[tuple[ClaimedJob, float]] | None = None,
                releases: list[ClaimedJob] | None = None) -> list[str | None]:
    """Record several attempts' ends in one script call (group commit); outcome or None per job.

    ``starts``: jobs claimed ahead that began since (with when), written first; ``releases``: jobs
    claimed ahead that a stopping worker hands back (finish.lua)."""
    request, planned = _finish_request(finished, worker_name, starts, releases)
    written = lua_scripts.run("finish", connection, [], [request])
    return _finish_outcomes(finished, planned, written, worker_name)


def finish_and_claim(connection: Any, finished: list[tuple[ClaimedJob, AttemptResult]], worker_name: str,
                     starts: list[tuple[ClaimedJob, float]] | None, claim: list[Any] | None,
                     queues: list[str], start: int | None = None,
                     releases: list[ClaimedJob] | None = None) -> tuple[list[str | None], ClaimBatch]:
    """Record these ends (and starts) and claim the next jobs in one script call, ``finish_claim``:
    a busy worker pays one round trip per batch of jobs. ``claim``: :func:`claim_args` (None: no
    claim). Returns the outcomes (as :func:`finish_many`) and the jobs claimed."""
    request, planned = _finish_request(finished, worker_name, starts, releases)
    ended, flat, due, expired = lua_scripts.run("finish_claim", connection, [], [request, *(claim or [])])
    outcomes = _finish_outcomes(finished, planned, ended, worker_name)
    return outcomes, parse_claim([flat, due, expired], queues, start) if claim else ClaimBatch()


def _finish_request(finished: list[tuple[ClaimedJob, AttemptResult]], worker_name: str,
                    starts: list[tuple[ClaimedJob, float]] | None,
                    releases: list[ClaimedJob] | None) -> tuple[str, list[tuple[dict[str, Any], str, str | None]]]:
    now = time.time()
    planned = [_finish_entry(job, attempt, now) for job, attempt in finished]
    if starts and finished:  # a start and an end of the same attempt in one call: the start rides on the end
        ending = {job.member: entry for (job, _attempt), (entry, _outcome, _error) in zip(finished, planned)}
        rest = []
        for job, at in starts:
            entry = ending.get(job.member)
            if entry is None:
                rest.append((job, at))
            else:
                entry["began"] = epoch_to_rq_time(at)
        starts = rest
    events, maxlen = _events()
    request: dict[str, Any] = {"now": epoch_to_rq_time(now), "now_s": now, "events": events, "maxlen": maxlen,
                               "layout_json": layout_json(), "lease": get_settings().worker_lease, "worker": worker_name,
                               "entries": [entry for entry, _outcome, _error in planned]}
    if starts:
        request["starts"] = [{"job": keys.job(job.job_id), "wip": keys.started(job.queue), "member": job.member,
                              "id": job.job_id, "q": job.queue_short, "task": job.task_name, "user": job.user_id,
                              "at": epoch_to_rq_time(at)} for job, at in starts]
    if releases:
        request["releases"] = [_release_entry(job) for job in releases]
    return json.dumps(request, separators=(",", ":")), planned


def _release_entry(job: ClaimedJob) -> dict[str, Any]:
    entry = {"job": keys.job(job.job_id), "wip": keys.started(job.queue), "member": job.member, "id": job.job_id,
             "list": keys.queue_at(job.queue, job.priority), "wake": keys.wake(job.queue), "held": job.held or None}
    if job.group is not None:
        entry["group"], entry["grun"] = job.group, keys.group_running(job.queue)
    return entry


def _finish_outcomes(finished: list[tuple[ClaimedJob, AttemptResult]],
                     planned: list[tuple[dict[str, Any], str, str | None]], written: Any,
                     worker_name: str) -> list[str | None]:
    outcomes: list[str | None] = []
    for (job, attempt), (_entry, outcome, error), ok in zip(finished, planned, written):
        if ok in (b"stop", "stop") and outcome != STOPPED:  # stopped meanwhile: it ended canceled
            outcome, error = STOPPED, f"stopped while it ran; the attempt ended: {_last_line(error)}"
        if not ok:
            logger.warning("job %s task=%s queue=%s outcome=%s dropped: its lease expired and the job was taken "
                           "back", job.job_id, job.task_name, job.queue_short, outcome)
            outcomes.append(None)
            continue
        _log_attempt(job, outcome, attempt.duration, error, worker_name)
        task_metrics.buffer().add(job.job_id, job.queue_short, job.task_name, outcome, attempt.duration, error)
        outcomes.append(outcome)
    return outcomes


def _log_attempt(job: ClaimedJob, outcome: str, duration: float, error: str | None, worker_name: str) -> None:
    last_line = (error or "").strip().splitlines()[-1:] or [""]
    logger.log(
        logging.INFO if outcome == COMPLETED else logging.WARNING,
        "job %s task=%s queue=%s duration=%.3fs outcome=%s attempt=%d%s",
        job.job_id, job.task_name, job.queue_short, duration, outcome, job.retries + 1,
        f" error={last_line[0][:300]!r}" if error else "",
    )


# --- taking jobs back from dead or stopping workers ---------------------------------------------
def abandon_expired(connection: Any, queue: str, limit: int = 500) -> list[tuple[str, str, str]]:
    """Take back every job whose lease expired on ``queue``: each lost attempt is a stall
    (``stalls`` + 1, no retry used; a repeat crash past the task's ``max_stalls`` fails the job)."""
    return _abandon(connection, queue, [], "abandoned: its worker stopped heartbeating (killed or lost)", True, limit)


def stalled(connection: Any, jobs: list[ClaimedJob], reason: str) -> list[tuple[str, str, str]]:
    """Record jobs in hand whose attempt was lost to a crash seen at once (a work-horse killed by
    the OOM killer, say) as stalls, as the sweep would after their lease: no need to wait for it."""
    out = []
    for queue in sorted({j.queue for j in jobs}):
        members = [j.member for j in jobs if j.queue == queue]
        out += _abandon(connection, queue, members, reason, True, len(members))
    return out


def release(connection: Any, jobs: list[ClaimedJob], reason: str) -> list[tuple[str, str, str]]:
    """Put jobs in hand back at the head of their queues now (a shutdown); neither a retry nor a stall."""
    out = []
    for queue in sorted({j.queue for j in jobs}):
        members = [j.member for j in jobs if j.queue == queue]
        out += _abandon(connection, queue, members, reason, False, len(members))
    return out


def yield_leases(connection: Any, jobs: list[ClaimedJob]) -> None:
    """A worker about to exit with these attempts still running (stuck in C past its shutdown
    deadline, so neither finished nor safely interrupted) marks them ``fk_yield``: when their
    lease runs out, the sweep requeues them without counting a stall (abandon.lua). Nothing is
    requeued before the lease, so they never run twice at once."""
    with connection.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.hset(keys.job(job.job_id), "fk_yield", job.member)
        pipe.execute()


def _abandon(connection: Any, queue: str, members: list[str], reason: str, count: bool,
             limit: int) -> list[tuple[str, str, str]]:
    now = time.time()
    q = short_name(queue)
    flat = lua_scripts.run(
        "abandon", connection,
        [keys.started(queue), keys.failed(queue), keys.queue_counters(q), keys.wake(queue), keys.canceled(queue)],
        [now, epoch_to_rq_time(now), reason, "1" if count else "0", limit, layout_json(), get_settings().worker_lease,
         queue, result_exc_string(reason), *members],
    )
    out = [(_text(flat[i]), _text(flat[i + 1]), _text(flat[i + 2])) for i in range(0, len(flat), 3)]
    for job_id, task, outcome in out:
        logger.warning("job %s task=%s queue=%s outcome=%s%s reason=%r", job_id, task, q, outcome,
                       " abandoned=1" if count else "", reason)
        if count:
            task_metrics.buffer().add(job_id, q, task, ABANDONED, 0.0, reason)
    return out


def promote_due(connection: Any, queue: str, limit: int = 1000) -> int:
    """Move delayed jobs and retries that are due onto ``queue``; returns how many."""
    now = time.time()
    return int(lua_scripts.run("promote", connection,
                           [keys.scheduled(queue), *keys.queue_lists(queue), keys.wake(queue), keys.all_queues()],
                           [now, limit, keys.job_prefix(), *_events(), short_name(queue), epoch_to_rq_time(now)]))


def release_limits(connection: Any, limit: int = 100) -> tuple[int, float | None]:
    """Release the next parked job of every limiter whose slot has come (one script call).

    Returns (how many were released, seconds until the next limiter is due or None): the
    worker runs this again then, so a parked job starts within milliseconds of its slot."""
    released, wait = lua_scripts.run("release_limits", connection, [],
                                 [layout_json(), get_settings().worker_lease, limit])
    seconds = float(wait)
    return int(released), (seconds if seconds >= 0 else None)


def report_progress(connection: Any, job: ClaimedJob, value_json: str, maxlen: int) -> bool:
    """Write a running attempt's progress, only while its lease is its own (progress.lua): False,
    and nothing written, for a stale attempt whose job was taken back (it may run elsewhere)."""
    return bool(lua_scripts.run("progress", connection, [keys.started(job.queue), keys.job(job.job_id), keys.events()],
                                [job.member, value_json, maxlen, job.job_id, job.queue_short, job.task_name,
                                 job.user_id or ""]))


def extend_leases(pipe: Any, jobs: list[ClaimedJob], expiry: float) -> list[str]:
    """Queue on ``pipe`` one lease.lua call per queue extending these attempts' leases; returns the
    queues in call order (each reply lists that queue's stale members: taken back, never re-added)."""
    by_queue: dict[str, list[str]] = {}
    for job in jobs:
        by_queue.setdefault(job.queue, []).append(job.member)
    for queue, members in by_queue.items():
        lua_scripts.run("lease", pipe, [keys.started(queue)], [expiry, keys.job_prefix(), *members])
    return list(by_queue)


def extend_permits(connection: Any, jobs: list[ClaimedJob], lease_seconds: float) -> int:
    """Keep the concurrency permits of running jobs alive with their leases (heartbeat)."""
    pairs: list[str] = []
    for job in jobs:
        for name in job.held:
            pairs += [keys.limiter(name), job.member]
    if not pairs:
        return 0
    return int(lua_scripts.run("extend_permits", connection, [], [lease_seconds, *pairs]))


def expire_registries(connection: Any, queue: str) -> int:
    """Drop registry entries of ended jobs whose hash has expired (score = expiry)."""
    now = time.time()
    q = short_name(queue)
    with connection.pipeline(transaction=False) as pipe:
        for key in (keys.finished(queue), keys.failed(queue), keys.canceled(queue)):
            pipe.zremrangebyscore(key, "-inf", now)
        removed = sum(pipe.execute())
    if removed:
        connection.hincrby(keys.queue_counters(q), "*:expired", removed)
    return removed


# --- operator actions ----------------------------------------------------------------------------
def cancel(connection: Any, job_id: str, queue: str, reason: str = "canceled") -> tuple[bool, str]:
    """Cancel a pending or delayed job. Returns (canceled, status before / current status)."""
    settings = get_settings()
    now = time.time()
    ok, status = lua_scripts.run(
        "cancel", connection,
        [keys.job(job_id), *keys.queue_lists(queue), keys.scheduled(queue), keys.canceled(queue),
         keys.queue_counters(short_name(queue))],
        [job_id, epoch_to_rq_time(now), now + settings.failure_ttl, settings.failure_ttl, reason, *_events(),
         short_name(queue), layout_json()],
    )
    if ok:
        logger.info("job %s queue=%s outcome=canceled reason=%r", job_id, short_name(queue), reason)
    return bool(ok), _text(status) or ""


def requeue_failed(connection: Any, job_id: str, queue: str) -> tuple[bool, str]:
    """Run a failed job once more. Returns (requeued, current status)."""
    ok, status = lua_scripts.run(
        "requeue", connection,
        [keys.job(job_id), keys.failed(queue), keys.queue(queue), keys.queue_counters(short_name(queue)),
         keys.wake(queue), keys.queue_at(queue, "high"), keys.queue_at(queue, "low"), keys.all_queues()],
        [job_id, *_events(), short_name(queue), format_time()],
    )
    if ok:
        logger.info("job %s queue=%s requeued by an operator", job_id, short_name(queue))
    return bool(ok), _text(status) or ""


def delete(connection: Any, job_id: str, queue: str) -> tuple[bool, str]:
    """Delete a job that is not running. Returns (deleted, status)."""
    ok, status = lua_scripts.run(
        "delete", connection,
        [keys.job(job_id), keys.results(job_id), keys.queue(queue), keys.scheduled(queue), keys.finished(queue),
         keys.failed(queue), keys.canceled(queue), keys.queue_counters(short_name(queue)),
         keys.queue_at(queue, "high"), keys.queue_at(queue, "low")],
        [job_id, *_events(), short_name(queue), layout_json(), epoch_to_rq_time(time.time()), time.time()],
    )
    return bool(ok), _text(status) or ""


def requeue_failed_many(connection: Any, job_ids: list[str], queue: str) -> int:
    """:func:`requeue_failed` for many jobs of one queue in one pipeline; returns how many were
    requeued (a job no longer failed is skipped by the script)."""
    q = short_name(queue)
    shared = [keys.failed(queue), keys.queue(queue), keys.queue_counters(q), keys.wake(queue),
              keys.queue_at(queue, "high"), keys.queue_at(queue, "low"), keys.all_queues()]
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            lua_scripts.run("requeue", pipe, [keys.job(job_id), *shared], [job_id, *_events(), q, format_time()])
        replies = pipe.execute()
    done = sum(1 for ok, _status in replies if ok)
    if done:
        logger.info("%d failed job(s) of queue=%s requeued by an operator", done, q)
    return done


def delete_failed_many(connection: Any, job_ids: list[str], queue: str) -> int:
    """Delete many failed jobs of one queue in one pipeline; returns how many were deleted (a job
    no longer failed, retried meanwhile say, is left alone by the script)."""
    q = short_name(queue)
    now = time.time()
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            lua_scripts.run(
                "delete", pipe,
                [keys.job(job_id), keys.results(job_id), keys.queue(queue), keys.scheduled(queue), keys.finished(queue),
                 keys.failed(queue), keys.canceled(queue), keys.queue_counters(q), keys.queue_at(queue, "high"),
                 keys.queue_at(queue, "low")],
                [job_id, *_events(), q, layout_json(), epoch_to_rq_time(now), now, "failed"])
        replies = pipe.execute()
    done = sum(1 for ok, _status in replies if ok)
    if done:
        logger.info("%d failed job(s) of queue=%s deleted by an operator", done, q)
    return done


def fail_pending(connection: Any, job_id: str, queue: str, error: str, retry: bool) -> tuple[bool, str]:
    """An operator fails a job that has not started. Returns (done, new or current status).

    With ``retry`` the job waits by its own retry policy, as after a failed attempt."""
    max_retries, stored, task = connection.hmget(keys.job(job_id), "fk_max", "fk_retry", "fk_task")
    policy = retry_policy_of(_text(stored), short_name(queue), _text(task) or "") if retry else DEFAULT_POLICY
    delays = [policy.delay(n) for n in range(_int(max_retries))] if retry else []
    reasons = [retry_reason(policy, n, _int(max_retries), delay) for n, delay in enumerate(delays)]
    now = time.time()
    ok, status = lua_scripts.run(
        "fail", connection,
        [keys.job(job_id), keys.queue(queue), keys.scheduled(queue), keys.failed(queue),
         keys.queue_counters(short_name(queue)), keys.queue_at(queue, "high"), keys.queue_at(queue, "low"),
         keys.results(job_id)],
        [job_id, error[-MAX_ERROR_CHARS:], "1" if retry else "0", now, epoch_to_rq_time(now), json.dumps(delays),
         *_events(), short_name(queue), layout_json(), result_exc_string(error[-MAX_ERROR_CHARS:]),
         json.dumps(reasons)],
    )
    if ok:
        logger.warning("job %s queue=%s outcome=%s by hand error=%r", job_id, short_name(queue), _text(status), error[:300])
    return bool(ok), _text(status) or ""


def stop_running(connection: Any, job_id: str, reason: str) -> tuple[bool, str, str]:
    """Mark a running job to stop and tell its worker. Returns (marked, status, worker name)."""
    reply = lua_scripts.run("stop", connection, [keys.job(job_id)], [job_id, reason, keys.stop_requests(""), *_events()])
    ok, status = reply[0], _text(reply[1]) or ""
    worker = _text(reply[2]) if len(reply) > 2 else ""
    if ok:
        logger.info("job %s: stop requested (%s); its worker %s will end it", job_id, reason, worker)
    return bool(ok), status, worker or ""
