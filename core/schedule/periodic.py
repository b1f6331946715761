"""Periodic jobs on rq-scheduler: the built-in schedules and the host app's own, side by side.

rq-scheduler 0.14 needs corrections, made here:

* it stores jobs with RQ's default (pickle) serializer and has no option for it: its
  ``job_class`` hook gets :class:`ScheduledTaskJob`, which is always JSON and runs only
  registered tasks;
* its lock is deleted unconditionally and can expire during a long cycle, so two schedulers
  can enqueue the same run (rq-scheduler issue 312): here each due run is *claimed* atomically
  (a Lua script moves the entry to its next run time only if it is still due), so exactly one
  scheduler enqueues it whatever happens to the lock;
* its cron is UTC-only and reads its template job, which a run under the same id replaces and
  which then expires: here every definition (``owner`` builtin or host, cron in any IANA zone,
  overlap and missed-run policies) is kept in our own hash, ``fikiri:periodic:definitions``,
  and the scheduler pass (:meth:`JsonScheduler.run_due`) reads that, with an injectable clock;
* its jobs live outside RQ's registries, so :func:`list_periodic_jobs` and the stats read its
  sorted set directly.

Registration is idempotent: a schedule whose definition has not changed keeps its next run; a
changed one is rescheduled. :func:`register_periodic_jobs` manages the built-in entries only;
:func:`register_periodic` and :func:`unregister_periodic` manage the host's, and neither ever
touches the other's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from core.api.queues import get_queue
from core.config import get_settings
from core.errors import InvalidScheduleError, JobNotFoundError, JobsError
from core.platform import keys
from core.platform.connection import get_redis
from core.queue import lifecycle, lua_scripts, task_registry
from core.queue.job_options import expiry_time
from core.schedule.cron import next_fire, parse_cron
from core.schedule.spec import BUILTIN, HOST, ID_PREFIX, PeriodicJob, check_name, host_definition, schedule_id

logger = logging.getLogger(__name__)

__all__ = ["ID_PREFIX", "PeriodicJob", "JsonScheduler", "register_periodic", "unregister_periodic",
           "register_periodic_jobs", "list_periodic", "list_periodic_jobs"]


class ScheduledTaskJob(RQJob):
    """rq-scheduler's template of a periodic job: JSON whatever serializer it asks for.

    It is never run by RQ, and the scheduler does not read it back (definitions live in our own
    hash): each due run is created through :func:`core.queue.lifecycle.enqueue`, so it is counted,
    claimed and finished like every other job. It is kept so RQ tooling sees the schedule."""

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


def periodic_definitions() -> list[PeriodicJob]:
    """The built-in periodic jobs, from the settings (their cron times are UTC)."""
    s = get_settings()
    return [
        PeriodicJob(f"{ID_PREFIX}email-sync", "Gmail sync for all users", "sync_all_users", "email",
                    interval=max(1, round(s.email_sync_interval_minutes * 60))),
        PeriodicJob(f"{ID_PREFIX}ai-processing", "Classify unprocessed mail", "process_unclassified", "ai",
                    kwargs={"limit": s.ai_processing_batch_size},
                    interval=max(1, round(s.ai_processing_interval_minutes * 60))),
        PeriodicJob(f"{ID_PREFIX}nightly-cleanup", "Nightly cleanup", "nightly_cleanup", "email",
                    cron=s.cleanup_cron),
        PeriodicJob(f"{ID_PREFIX}daily-digest", "Daily digest email", "daily_digest", "email", cron=s.digest_cron),
        PeriodicJob(f"{ID_PREFIX}domain-retention", "Prune old domain rows (FIKIRI_DOMAIN_RETENTION_DAYS)",
                    "prune_domain_data", "email", cron=s.cleanup_cron),
        PeriodicJob(f"{ID_PREFIX}ai-threads", "AI on unprocessed threads", "process_unprocessed_threads", "ai",
                    kwargs={"limit": s.ai_processing_batch_size},
                    interval=max(1, round(s.ai_processing_interval_minutes * 60))),
        PeriodicJob(f"{ID_PREFIX}user-digests", "Each user's daily digest", "send_user_digests", "email",
                    cron=s.user_digest_cron),
        PeriodicJob(f"{ID_PREFIX}failure-alerts", "Failure-rate alerts", "check_failure_rates", "email",
                    interval=s.alert_check_interval),
    ]


def registered_marker_key() -> str:
    """Set when the definitions are registered; gone after Redis lost its data, so re-register."""
    return keys.periodic("registered")


def _paused_key() -> str:
    return keys.periodic("paused")


def _last_run_key() -> str:
    return keys.periodic("last_run")


def _definitions_key() -> str:
    """HASH: periodic id -> its definition as JSON (built-in and host schedules alike)."""
    return keys.periodic("definitions")


def stored_definitions(connection: Any = None) -> dict[str, PeriodicJob]:
    """Every definition in Redis by id; an unreadable one is logged and left out."""
    out: dict[str, PeriodicJob] = {}
    for raw_id, blob in (connection or get_redis()).hgetall(_definitions_key()).items():
        try:
            out[raw_id.decode()] = PeriodicJob.from_json(blob)
        except (ValueError, TypeError) as exc:
            logger.warning("periodic definition %r is unreadable (%s); ignored", raw_id, exc)
    return out


class JsonScheduler(Scheduler):
    """rq-scheduler with JSON jobs, registered tasks only, and atomic claiming of due runs.

    ``clock`` (epoch seconds) is injectable so tests can step through days and DST changes
    without waiting; :meth:`run_due` also takes ``now`` directly."""

    job_class = ScheduledTaskJob

    def __init__(self, interval: float | None = None, connection: Any = None, name: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        # rq-scheduler's key names are class attributes; in cluster mode they carry the hash tag
        self.scheduled_jobs_key = keys.rq_scheduler("scheduler:scheduled_jobs")
        self.scheduler_key = keys.rq_scheduler("scheduler")
        self.scheduler_lock_key = keys.rq_scheduler("scheduler_lock")
        self.redis_scheduler_namespace_prefix = keys.rq_scheduler("scheduler_instance:")
        ScheduledTaskJob.redis_job_namespace_prefix = keys.job_prefix()  # RQ's class attribute, read by its Job
        super().__init__(queue_name=get_queue("email").name, interval=interval or get_settings().scheduler_interval,
                         connection=connection or get_redis(), job_class=ScheduledTaskJob, name=name)
        self.clock = clock

    def enqueue_jobs(self) -> list[str]:  # type: ignore[override]
        """rq-scheduler's per-pass entry point (scripts/periodic_scheduler.py calls it)."""
        return self.run_due()

    def run_due(self, now: float | None = None) -> list[str]:
        """Enqueue every run due at ``now`` (default: the clock); returns the ids of the runs enqueued."""
        now = self.clock() if now is None else now
        due = self.connection.zrangebyscore(self.scheduled_jobs_key, "-inf", now, withscores=True)
        if not due:
            return []
        ids = [member.decode() for member, _ in due]
        blobs = self.connection.hmget(_definitions_key(), ids)
        enqueued = []
        for periodic_id, (_, score), blob in zip(ids, due, blobs):
            try:
                if blob is None:
                    job_id = self._run_without_definition(periodic_id, now)
                else:
                    job_id = self._run_one(PeriodicJob.from_json(blob), float(score), now)
            except (JobsError, ValueError, TypeError, KeyError) as exc:
                # One broken entry must not stop the others; Redis errors still reach the caller.
                logger.error("periodic job %s could not run: %s", periodic_id, exc)
                continue
            if job_id:
                enqueued.append(job_id)
        return enqueued

    def _claim(self, periodic_id: str, now: float, next_time: float | str) -> bool:
        """Move the entry to ``next_time`` if it is still due: only one scheduler wins a run."""
        claimed = lua_scripts.run("periodic_claim", self.connection, [self.scheduled_jobs_key],
                              [periodic_id, now, next_time])
        if not claimed:
            logger.info("periodic run of %s already claimed by another scheduler", periodic_id)
        return bool(claimed)

    def _run_one(self, definition: PeriodicJob, due: float, now: float) -> str | None:
        """Claim, then apply pause, missed-run and overlap policies, then enqueue one run."""
        next_time = definition.next_run(due, now)
        if not self._claim(definition.id, now, next_time):
            return None
        if self.connection.sismember(_paused_key(), definition.id):
            logger.info("periodic job %s is paused; skipped this run", definition.id)
            return None
        late = now - due
        if definition.missed == "skip" and late > get_settings().missed_grace:
            logger.warning("periodic job %s: the run due %s was missed by %.0f s (missed=skip); next at %s",
                           definition.id, _iso(due), late, _iso(next_time))
            return None
        if definition.overlap == "skip" and _live_run(self.connection, definition.id):
            logger.warning("periodic job %s: the previous run has not finished; skipped this run", definition.id)
            return None
        return self._enqueue_run(definition, due)

    def _enqueue_run(self, definition: PeriodicJob, due: float) -> str:
        """One run through the normal lifecycle. With overlap "skip" it takes the schedule's own
        id, so the enqueue script itself refuses a second live run; with "queue" it is named after
        its due time, so a run enqueued twice by mistake is still one run."""
        job_id = definition.id if definition.overlap == "skip" else f"{definition.id}-{int(due)}"
        settings = get_settings()
        interval = definition.interval or 0
        spec = task_registry.get(definition.queue, definition.task)  # its expires counts from this enqueue
        run = lifecycle.NewJob(
            job_id=job_id, task_name=definition.task, kwargs=definition.kwargs, max_retries=_max_retries(definition),
            timeout=settings.timeout_for(definition.queue), check_existing=True,
            extra_fields=["meta", json.dumps(_meta(definition)), "description", definition.name],
            result_ttl=max(2 * 86_400, 2 * interval), failure_ttl=max(settings.failure_ttl_for(definition.queue), 2 * interval),
            expires_at=expiry_time(spec.expires, time.time(), check_past=False) if spec is not None else None,
            retry_policy=spec.retry.to_field() if spec is not None else None,  # else the worker's view of the task
        )
        if spec is None:
            logger.warning("periodic job %s: task %s is not registered in this scheduler (JOBS_TASK_MODULES?); "
                           "enqueued anyway for a worker that has it", definition.id, definition.task)
        lifecycle.enqueue(self.connection, definition.queue, [run])
        self.connection.hset(_last_run_key(), definition.id, time.time())
        logger.info("periodic job %s enqueued as %s (%s)", definition.id, job_id, definition.task)
        return job_id

    def _run_without_definition(self, entry_id: str, now: float) -> str | None:
        """An entry with no definition of ours: a one-off rq-scheduler job (``enqueue_at``) or a
        schedule written by an older version. Run it from its template, as before; drop it when
        the template is gone too."""
        job = _fetch(entry_id)
        if job is None:
            self.connection.zrem(self.scheduled_jobs_key, entry_id)
            logger.warning("scheduled entry %s has neither a definition nor a job; removed", entry_id)
            return None
        interval = int(job.meta.get("interval") or 0)
        next_time: float | str = ""  # a one-off: the claim removes the entry
        if interval:
            next_time = now + interval
        elif job.meta.get("cron_string"):
            next_time = next_fire(parse_cron(job.meta["cron_string"]), ZoneInfo("UTC"), now)
        if not self._claim(entry_id, now, next_time):
            return None
        if _live_run(self.connection, entry_id):
            return None
        run = lifecycle.NewJob(
            job_id=entry_id, task_name=job.func_name, kwargs=job.kwargs, max_retries=0,
            timeout=int(job.timeout or get_settings().timeout_for(lifecycle.short_name(job.origin))),
            check_existing=True, extra_fields=["meta", json.dumps(job.meta), "description", job.description or ""],
        )
        lifecycle.enqueue(self.connection, lifecycle.short_name(job.origin), [run])
        return entry_id


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(definition: PeriodicJob) -> dict[str, Any]:
    return {"periodic": definition.id, "owner": definition.owner, "definition": definition.signature(),
            "max_retries": _max_retries(definition)}


def _max_retries(definition: PeriodicJob) -> int:
    """Built-in runs are not retried (the next run is the retry, as before); a host run gets its
    task's own max_retries, as if the host had enqueued it."""
    if definition.owner == BUILTIN:
        return 0
    spec = task_registry.get(definition.queue, definition.task)
    if spec is None or spec.max_retries is None:
        return get_settings().default_max_retries
    return spec.max_retries


def _live_run(connection: Any, job_id: str) -> bool:
    """Whether a run of ours holds ``job_id`` and is still pending, delayed or running. A hash
    without ``fk_task`` is rq-scheduler's template, not a run."""
    status, ours = connection.hmget(keys.job(job_id), "status", "fk_task")
    return ours is not None and status is not None and status.decode() in lifecycle.LIVE_STATUSES


def _scheduler() -> JsonScheduler:
    return JsonScheduler()


def _store(scheduler: JsonScheduler, definition: PeriodicJob, now: float) -> bool:
    """Save ``definition`` and schedule its first run, unless it is stored unchanged and
    scheduled (then its next run stays). Returns whether anything changed."""
    connection = scheduler.connection
    stored = connection.hget(_definitions_key(), definition.id)
    scheduled = connection.zscore(scheduler.scheduled_jobs_key, definition.id) is not None
    if scheduled and stored is not None and stored.decode() == definition.signature():
        return False
    # The definition first: a concurrent built-in registration then sees the owner of the entry.
    connection.hset(_definitions_key(), definition.id, definition.signature())
    first = definition.first_run(now)
    if not _live_run(connection, definition.id):
        _write_template(scheduler, definition, first)
    connection.zadd(scheduler.scheduled_jobs_key, {definition.id: first})
    return True


def _write_template(scheduler: JsonScheduler, definition: PeriodicJob, first: float) -> None:
    """rq-scheduler's template job (JSON), so RQ tooling and ``redis-cli`` see the schedule.
    Never written over a live run of the same id: that would erase the run's state."""
    scheduler.schedule(datetime.fromtimestamp(first, UTC).replace(tzinfo=None), definition.task,
                       kwargs=definition.kwargs, id=definition.id, queue_name=get_queue(definition.queue).name,
                       description=definition.name, meta=_meta(definition),
                       result_ttl=get_settings().result_ttl, timeout=get_settings().timeout_for(definition.queue))


def register_periodic_jobs(now: float | None = None) -> list[dict[str, Any]]:
    """Create or update every built-in periodic job (unchanged ones keep their next run), and
    remove built-in entries no longer defined. Host schedules are never touched."""
    scheduler = _scheduler()
    connection = scheduler.connection
    now = time.time() if now is None else now
    wanted = {d.id: d for d in periodic_definitions()}
    for definition in wanted.values():
        if _store(scheduler, definition, now):
            logger.info("registered periodic job %s (%s)", definition.id, definition.trigger)
    stored = stored_definitions(connection)
    for raw_id in connection.zrange(scheduler.scheduled_jobs_key, 0, -1):
        entry_id = raw_id.decode()
        owner = stored[entry_id].owner if entry_id in stored else BUILTIN  # no definition: an older built-in
        if entry_id.startswith(ID_PREFIX) and entry_id not in wanted and owner == BUILTIN:
            _delete_entry(connection, entry_id)
            logger.info("removed periodic job %s: no longer defined", entry_id)
    connection.set(registered_marker_key(), int(now))
    return list_periodic_jobs()


def register_periodic(name: str, task: str, *, cron: str | None = None, interval: Any = None, every: Any = None,
                      tz: str = "UTC", payload: dict[str, Any] | None = None, queue: str | None = None,
                      overlap: str = "skip", missed: str = "run_once", now: float | None = None) -> dict[str, Any]:
    """Register (or update) the host app's schedule ``name``: run ``task`` with ``payload`` at
    each ``cron`` time in ``tz`` (an IANA zone), or every ``interval`` seconds (``every`` is the
    same argument under a shorter name; an interval's first run is at once).

    ``overlap``: ``"skip"`` (default) enqueues no new run while the previous one is pending or
    running; ``"queue"`` enqueues every run. ``missed``: after the scheduler was down, ``"run_once"``
    (default) enqueues one catch-up run for however many were missed, ``"skip"`` enqueues none
    and waits for the next time. DST rules are in :mod:`core.schedule.cron`.

    Idempotent, so a host can call it at every start: an unchanged schedule keeps its next run.
    Stored as ``periodic-<name>`` beside the built-in schedules; a name a built-in uses is
    refused. Bad input raises a :class:`~core.errors.JobsError` (HTTP 400). Returns the entry
    as :func:`list_periodic` shows it."""
    if interval is not None and every is not None:
        raise InvalidScheduleError("give interval or every (the same thing), not both")
    definition = host_definition(name, task, cron_expr=cron, interval=interval if every is None else every, tz=tz,
                                 payload=payload, queue=queue, overlap=overlap, missed=missed)
    if definition.id in {d.id for d in periodic_definitions()}:
        raise InvalidScheduleError(f"schedule name {name!r} is taken by a built-in periodic job; choose another")
    scheduler = _scheduler()
    if _store(scheduler, definition, time.time() if now is None else now):
        logger.info("registered host schedule %s (%s)", definition.id, definition.trigger)
    return _entry(definition.id)


def unregister_periodic(name: str) -> None:
    """Remove the host schedule ``name`` for good (its definition too). A run already enqueued
    finishes; built-in schedules cannot be removed here (see :func:`remove_periodic`)."""
    periodic_id = schedule_id(name)
    definition = stored_definitions().get(periodic_id)
    if definition is None or definition.owner != HOST:
        known = ", ".join(host_schedule_names()) or "none"
        raise JobNotFoundError(f"no host schedule {check_name(name)!r}; host schedules: {known}")
    _delete_entry(get_redis(), periodic_id)
    logger.info("removed host schedule %s", periodic_id)


def host_schedule_names() -> list[str]:
    return sorted(d.name for d in stored_definitions().values() if d.owner == HOST)


def _delete_entry(connection: Any, periodic_id: str) -> None:
    """Unschedule ``periodic_id`` and forget its definition and bookkeeping."""
    with connection.pipeline() as pipe:
        pipe.zrem(keys.rq_scheduler("scheduler:scheduled_jobs"), periodic_id)
        pipe.hdel(_definitions_key(), periodic_id)
        pipe.srem(_paused_key(), periodic_id)
        pipe.hdel(_last_run_key(), periodic_id)
        pipe.execute()


def _fetch(job_id: str) -> ScheduledTaskJob | None:
    try:
        return ScheduledTaskJob.fetch(job_id, connection=get_redis())
    except Exception:
        return None


def _describe(definition: PeriodicJob, score: float | None, paused: bool, last: float | None) -> dict[str, Any]:
    return {
        "id": definition.id, "name": definition.name, "task": definition.task, "queue": definition.queue,
        "trigger": definition.trigger, "kwargs": definition.kwargs, "owner": definition.owner,
        "cron": definition.cron, "interval": definition.interval, "tz": definition.tz,
        "overlap": definition.overlap, "missed": definition.missed,
        "next_run": score, "registered": score is not None, "paused": paused, "last_run": last,
    }


def list_periodic_jobs() -> list[dict[str, Any]]:
    """Every periodic job, built-in (from the settings, registered or not) then the host's
    (from Redis), with trigger, owner, policies, next run, pause state and last run."""
    connection = get_redis()
    definitions = {d.id: d for d in periodic_definitions()}
    definitions.update(sorted((i, d) for i, d in stored_definitions(connection).items() if d.owner == HOST))
    scheduled = {k.decode(): float(v) for k, v in connection.zrange(keys.rq_scheduler("scheduler:scheduled_jobs"), 0, -1,
                                                                     withscores=True)}
    paused = {m.decode() for m in connection.smembers(_paused_key())}
    last = {k.decode(): float(v) for k, v in connection.hgetall(_last_run_key()).items()}
    return [_describe(d, scheduled.get(i), i in paused, last.get(i)) for i, d in definitions.items()]


def list_periodic() -> list[dict[str, Any]]:
    """Every definition with ``next_run`` (epoch seconds): the name DESIGN.md gives this list."""
    return list_periodic_jobs()


def _entry(periodic_id: str) -> dict[str, Any]:
    return next(e for e in list_periodic_jobs() if e["id"] == periodic_id)


def count_periodic_jobs() -> int:
    return get_redis().zcard(keys.rq_scheduler("scheduler:scheduled_jobs"))


def _require(periodic_id: str) -> dict[str, Any]:
    entries = list_periodic_jobs()
    for entry in entries:
        if entry["id"] == periodic_id and entry["registered"]:
            return entry
    known = ", ".join(e["id"] for e in entries if e["registered"]) or "none"
    raise JobNotFoundError(f"no periodic job {str(periodic_id)[:80]!r}; registered: {known}")


def pause_periodic(periodic_id: str) -> dict[str, Any]:
    _require(periodic_id)
    get_redis().sadd(_paused_key(), periodic_id)
    return _require(periodic_id)


def resume_periodic(periodic_id: str) -> dict[str, Any]:
    _require(periodic_id)
    get_redis().srem(_paused_key(), periodic_id)
    return _require(periodic_id)


def run_periodic_now(periodic_id: str) -> str:
    """Enqueue one extra run now (the schedule is unchanged); returns the new job's id."""
    entry = _require(periodic_id)
    job_id = get_queue(entry["queue"]).enqueue_job(entry["task"], entry["kwargs"], max_retries=0)
    get_redis().hset(_last_run_key(), periodic_id, time.time())
    return job_id


def remove_periodic(periodic_id: str) -> None:
    """Unschedule a periodic job. A built-in one comes back at the next registration (a
    scheduler restart); a host one is removed for good, as :func:`unregister_periodic` does."""
    entry = _require(periodic_id)
    connection = get_redis()
    if entry["owner"] == HOST:
        _delete_entry(connection, periodic_id)
        return
    connection.zrem(keys.rq_scheduler("scheduler:scheduled_jobs"), periodic_id)
    connection.srem(_paused_key(), periodic_id)
