"""Every Redis key name Fikiri Jobs reads or writes, in one place (arq's ``constants.py`` idea).

Two families:

* RQ's own layout (``rq:job:<id>``, ``rq:queue:<name>``, ``rq:wip:<name>`` ...), kept so that
  ``rq info``, ``redis-cli`` and RQ tooling see our jobs where they expect them;
* ours, under the ``JOBS_QUEUE_PREFIX`` (``fikiri:`` by default): counters, the per-user index,
  wake-up tokens, unique-job locks and maintenance locks.

Every key is bounded: job hashes and unique locks expire, lists are trimmed, registries are swept
by score, counters are one small hash per queue. The README's "Redis keys" section lists the same.
One small function per key, each with its type and bound in its docstring: the same shape on
purpose, so a key's name is written once and found by name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.config import get_settings


def cluster_tag() -> str:
    """The hash tag every key carries in cluster mode: ``{<JOBS_QUEUE_PREFIX>}`` (core/platform/cluster.py)."""
    return "{" + get_settings().queue_prefix + "}"


def slot_guard() -> str:
    """A key in our slot that is never written (cluster mode): every script lists it in ``KEYS``,
    so while the slot migrates the script is refused before it starts (``ASK``: a listed key is
    missing) instead of stopping half-way at a key already moved (core/platform/cluster.py)."""
    return f"{cluster_tag()}:slot-guard"


def _rq() -> str:
    """RQ's namespace: ``rq``; in cluster mode ``{fikiri}:rq`` (RQ has no cluster support: its
    tools cannot follow there anyway, docs/CLUSTER.md)."""
    return f"{cluster_tag()}:rq" if get_settings().redis_cluster else "rq"


def _p() -> str:
    """Our namespace: ``fikiri``; in cluster mode ``{fikiri}``, the same slot as every other key."""
    return cluster_tag() if get_settings().redis_cluster else get_settings().queue_prefix


# --- RQ's layout ------------------------------------------------------------------------------
def job(job_id: str) -> str:
    """HASH: one job (RQ's fields plus ours, ``fk_*``). Expires ``result_ttl``/``failure_ttl``
    after the job ended; has no expiry while it is pending, delayed or running."""
    return f"{_rq()}:job:{job_id}"


def job_prefix() -> str:
    return f"{_rq()}:job:"


def results(job_id: str) -> str:
    """STREAM: RQ's result record of a job (rq.results.Result): one entry per final end (the result,
    or the error, base64 as RQ's JSONSerializer reads it; core/queue/lua/rq_lib.lua), at most 10, expiring
    with the job hash; deleted with the job and on a re-run of its id."""
    return f"{_rq()}:results:{job_id}"


def queue(full_name: str) -> str:
    """LIST: ids of pending jobs of normal priority, head first (RQ's queue, so ``rq info`` counts them)."""
    return f"{_rq()}:queue:{full_name}"


PRIORITIES = ("high", "normal", "low")  # the order every worker claims in, on each queue


def queue_at(full_name: str, priority: str) -> str:
    """LIST: pending ids of one priority; ``normal`` is RQ's own list, ``high``/``low`` are ours."""
    if priority == "normal":
        return queue(full_name)
    return f"{_p()}:prio:{priority}:{full_name}"


def queue_lists(full_name: str) -> list[str]:
    """The pending lists of a queue in claim order: high, normal, low."""
    return [queue_at(full_name, p) for p in PRIORITIES]


def all_queues() -> str:
    """SET: every queue key (RQ's ``rq:queues``), so ``rq info`` lists ours: a queue is added by the
    script that puts its first job on it (enqueue, a fallback hand-back, a callback job, a requeue)."""
    return f"{_rq()}:queues"


def scheduled(full_name: str) -> str:
    """ZSET: delayed jobs and retries waiting for their back-off; score = run time (epoch s)."""
    return f"{_rq()}:scheduled:{full_name}"


def started(full_name: str) -> str:
    """ZSET: running jobs, member ``<job id>:<claim id>``, score = lease expiry (epoch s).

    This is the in-flight record: a claim moves a job from the queue list here in one script."""
    return f"{_rq()}:wip:{full_name}"


def finished(full_name: str) -> str:
    """ZSET: completed jobs still kept; score = when they expire (epoch s)."""
    return f"{_rq()}:finished:{full_name}"


def failed(full_name: str) -> str:
    """ZSET: failed jobs still kept; score = when they expire (epoch s)."""
    return f"{_rq()}:failed:{full_name}"


def failed_exported(full_name: str) -> str:
    """ZSET: failed jobs of the queue already exported before they expire (``JOBS_FAILED_EXPORT``);
    score = the expiry they were exported with. Entries past their expiry are dropped by each export run."""
    return f"{_p()}:failed_exported:{full_name}"


def canceled(full_name: str) -> str:
    """ZSET: canceled jobs still kept, and expired ones (never started: ``fk_expired``); score = when they expire (epoch s)."""
    return f"{_rq()}:canceled:{full_name}"


def workers() -> str:
    """SET: the keys (:func:`worker`) of live workers (RQ's ``rq:workers``; RQ's tools read each
    member as a worker key, so a bare name there made rq-exporter and rq-dashboard answer 500)."""
    return f"{_rq()}:workers"


def queue_workers(full_name: str) -> str:
    """SET: the keys of the workers serving a queue (RQ's ``rq:workers:<queue>``)."""
    return f"{_rq()}:workers:{full_name}"


def worker(name: str) -> str:
    """HASH: one worker (RQ's ``rq:worker:<name>``): hostname, pid, queues, state, heartbeat.
    Expires ``JOBS_WORKER_TTL`` after its last heartbeat."""
    return f"{_rq()}:worker:{name}"


def rq_scheduler(part: str) -> str:
    """rq-scheduler's keys, in RQ's namespace so its tools read them: ``scheduler:scheduled_jobs``
    (ZSET periodic id -> next run, epoch s), ``scheduler`` and ``scheduler_lock`` (its registration
    and its lock), ``scheduler_instance:`` (the prefix of each scheduler's hash)."""
    return f"{_rq()}:{part}"


def worker_name(member: str | bytes) -> str:
    """A worker's name from a member of :func:`workers` (a key; a bare name written before the
    members became keys is read as it is)."""
    text = member.decode() if isinstance(member, bytes) else member
    prefix = f"{_rq()}:worker:"
    return text[len(prefix):] if text.startswith(prefix) else text


# --- ours ------------------------------------------------------------------------------------
def queue_counters(queue_short: str) -> str:
    """HASH: lifetime counters of a queue, one field per ``<task>:<event>`` (enqueued, completed,
    failed, retried, abandoned, canceled, requeued, deleted, expired: never ran, past its ``expires``), and
    ``*:expired``: registry entries swept after their TTL. Stats sum them per event; task metrics
    read them per task, so both come from the same increments."""
    return f"{_p()}:stats:{queue_short}"


def user_jobs(user_id: str) -> str:
    """LIST: job ids of a user, newest first, trimmed to JOBS_USER_INDEX_SIZE, expiring."""
    return f"{_p()}:user:{user_id}:jobs"


def users_with_jobs() -> str:
    """SET: user ids that have an index; lets the nightly cleanup walk them without SCAN."""
    return f"{_p()}:users"


def wake(full_name: str) -> str:
    """LIST: at most one wake-up token per queue; idle workers block on it (BLPOP)."""
    return f"{_p()}:wake:{full_name}"


def unique(queue_short: str, task: str, payload: dict[str, Any] | None, unique_key: str | None) -> str:
    """STRING: the job id holding a ``unique_for`` window; expires with the window."""
    if unique_key is None:
        digest = hashlib.sha1(json.dumps(payload or {}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        unique_key = f"{task}:{digest}"
    return f"{_p()}:unique:{queue_short}:{unique_key}"


def maintenance_lock(full_name: str) -> str:
    """STRING: held by the one worker sweeping a queue's registries; lives one maintenance interval."""
    return f"{_p()}:maintenance-lock:{full_name}"


def metrics(*parts: str) -> str:
    """Task timings (``fikiri:metrics:task:<t>`` HASH, ``:history:<t>`` LIST of 100,
    ``:buckets:<t>`` HASH, ``:failures`` LIST of 500, ``:minute:<epoch>`` HASH expiring in 3 h,
    ``:tasks`` SET)."""
    return ":".join((_p(), "metrics", *parts))


def periodic(part: str) -> str:
    """Periodic-job bookkeeping: ``registered`` (STRING marker), ``paused`` (SET), ``last_run`` (HASH)."""
    return f"{_p()}:periodic:{part}"


def audit() -> str:
    """STREAM: operator actions, trimmed to JOBS_AUDIT_MAX_ENTRIES."""
    return f"{_p()}:audit"


def dashboard_session(digest: str) -> str:
    """HASH: one dashboard session, keyed by the sha256 of its cookie id; expires with the session."""
    return f"{_p()}:dashboard:session:{digest}"


def alert(task: str) -> str:
    """STRING: set when a task's failure-rate alert went out; while it lives, no other alert for
    that task. Its expiry is renewed while the incident lasts, so it ends JOBS_ALERT_COOLDOWN after."""
    return f"{_p()}:alert:{task}"


def scheduler_heartbeat() -> str:
    """HASH: the periodic scheduler's last tick: ``at`` (epoch s), ``interval`` (s), ``host``, ``pid``;
    written by every pass of any scheduler (core/schedule/heartbeat.py), expires 7 days after the last."""
    return f"{_p()}:scheduler:heartbeat"


def scheduler_alert() -> str:
    """STRING: set when the "scheduler stopped" alert went out (the incident: the stale tick); like
    :func:`alert`, renewed while the scheduler stays silent, so it ends JOBS_ALERT_COOLDOWN after."""
    return f"{_p()}:scheduler:alert"


# --- flow control (core/flow/limits.py, claim.lua, release_limits.lua) --------------------------------
def limiter(name: str) -> str:
    """A limiter's state, ``name`` = ``rate:<key>`` (STRING: GCRA theoretical arrival time, epoch s,
    expiring when idle) or ``conc:<key>`` (ZSET: permits, member ``<job id>:<claim>``, score =
    lease expiry, so a dead worker's permit runs out with its lease)."""
    return f"{_p()}:limit:{name}"


def limiter_prefix() -> str:
    return f"{_p()}:limit:"


def parked(name: str) -> str:
    """LIST: ids of jobs waiting for limiter ``name`` to let them run, oldest first."""
    return f"{_p()}:parked:{name}"


def parked_prefix() -> str:
    return f"{_p()}:parked:"


def limiters_due() -> str:
    """ZSET: limiters with parked jobs, score = when the next one may run (Redis time, epoch s)."""
    return f"{_p()}:limits:due"


def paused_queues() -> str:
    """SET: full names of paused queues; claim.lua takes nothing from them. Survives restarts."""
    return f"{_p()}:paused"


def stop_requests(worker_name: str) -> str:
    """LIST: ids of running jobs a worker was asked to stop; read by its heartbeat; expires in 1 h."""
    return f"{_p()}:stop:{worker_name}"


# --- job groups (core/queue/groups.py, core/queue/lua/groups_lib.lua) ----------------------------
# A grouped job waits in its group's own list, not in RQ's rq:queue:<q>; claim.lua serves the groups
# of one queue and priority round-robin (weighted) from a rotation. Every key below is either empty
# and so gone (a group list, a rotation, a running count) once a group is idle, or an operator's
# setting (weight, pause) that lives until the operator changes it back.
UNGROUPED = "\x00"  # the rotation member that stands for the queue's own (ungrouped) priority list


def group_waiting(full_name: str, priority: str, group: str) -> str:
    """LIST: ids of a group's jobs waiting at one priority, oldest first; gone when empty."""
    return f"{_p()}:gwait:{priority}:{full_name}:{group}"


def group_rotation(full_name: str, priority: str) -> str:
    """ZSET: groups of a queue with jobs waiting at one priority (plus :data:`UNGROUPED` while the
    queue's own list has jobs), score = virtual time: a claim serves the lowest and adds 1/weight;
    a group leaves it when a claim finds its list empty, so it is bounded by the groups waiting."""
    return f"{_p()}:grot:{priority}:{full_name}"


def group_running(full_name: str) -> str:
    """HASH: group -> its jobs running now that carry ``group_concurrency`` (claimed, not yet
    finished or taken back: the limit reads it); a field is deleted when it reaches 0. Kept exact by
    claim, finish and abandon in the same scripts."""
    return f"{_p()}:grun:{full_name}"


def group_weights(full_name: str) -> str:
    """HASH: group -> weight (an operator's setting, ``q.set_group_weight``); weight 1 deletes the field."""
    return f"{_p()}:gweight:{full_name}"


def group_paused(full_name: str) -> str:
    """SET: groups of a queue no one claims from (``q.pause_group``) until ``q.resume_group``."""
    return f"{_p()}:gpaused:{full_name}"


def lua_layout() -> dict[str, str]:
    """Key prefixes for scripts that build keys from a job's own fields (its origin queue)."""
    return {"job": job_prefix(), "normal": f"{_rq()}:queue:", "high": f"{_p()}:prio:high:",
            "low": f"{_p()}:prio:low:", "scheduled": f"{_rq()}:scheduled:", "wake": f"{_p()}:wake:",
            "limit": limiter_prefix(), "parked": parked_prefix(), "due": limiters_due(), "events": events(),
            "canceled": f"{_rq()}:canceled:", "stats": f"{_p()}:stats:", "dependents": dependents_prefix(),
            "batch": batch_prefix(), "results": f"{_rq()}:results:", "queues": all_queues(),
            "gwait": f"{_p()}:gwait:", "grot": f"{_p()}:grot:", "grun": f"{_p()}:grun:",
            "gweight": f"{_p()}:gweight:", "gpaused": f"{_p()}:gpaused:"}


# --- events (core/queue/lua/events_lib.lua, core/events/stream.py) -------------------------------------------
def events() -> str:
    """STREAM: every lifecycle transition of every job, trimmed to about JOBS_EVENTS_MAXLEN entries.
    Fields: ``job``, ``event``, ``queue`` (short name), ``task``, and when known ``user``, ``detail``."""
    return f"{_p()}:events"


def metrics_hour(hour: int) -> str:
    """HASH: ``completed`` / ``failed`` executions in the hour starting at ``hour`` (epoch s), for
    the dashboard's 24 h throughput chart (the per-minute hashes live only 3 h); expires in 25 h."""
    return metrics("hour", str(hour))


# --- workflows (core/workflows/chains.py, core/queue/lua/hooks_lib.lua) -------------------------------------
def dependents(job_id: str) -> str:
    """SET: ids of jobs waiting for ``job_id`` to end (``depends_on``); deleted when it ends."""
    return f"{dependents_prefix()}{job_id}"


def dependents_prefix() -> str:
    return f"{_p()}:dependents:"


def batch(batch_id: str) -> str:
    """HASH: a batch: total, completed, failed, canceled, task, queue, user, created_at, on_complete
    (the callback job to create, JSON), callback_id and ended_at once every member ended; expires
    ``JOBS_RESULT_TTL`` after that."""
    return f"{batch_prefix()}{batch_id}"


def batch_prefix() -> str:
    return f"{_p()}:batch:"


def batch_jobs(batch_id: str) -> str:
    """LIST: a batch's member ids in enqueue order; expires with the batch hash."""
    return f"{batch(batch_id)}:jobs"


# --- webhooks (core/events/webhooks.py) ----------------------------------------------------------------
def webhooks() -> str:
    """HASH: registered webhooks, field = webhook id, value = JSON (url, secret, filters);
    at most JOBS_WEBHOOK_MAX fields."""
    return f"{_p()}:webhooks"


def webhook_attempts(webhook_id: str) -> str:
    """LIST: a webhook's newest delivery attempts (JSON), trimmed to JOBS_WEBHOOK_ATTEMPTS_KEPT;
    deleted with the webhook."""
    return f"{_p()}:webhook:{webhook_id}:attempts"


def webhook_group() -> str:
    """Not a key: the consumer group on :func:`events` the webhook dispatchers read through."""
    return f"{_p()}:webhooks"
