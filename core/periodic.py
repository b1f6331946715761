"""Periodic jobs on rq-scheduler, defined in one place, JSON like every other job.

rq-scheduler 0.14 needs three corrections, made here:

* it stores jobs with RQ's default (pickle) serializer and has no option for it: its
  ``job_class`` hook gets :class:`ScheduledTaskJob`, which is always JSON and runs only
  registered tasks;
* its lock is deleted unconditionally and can expire during a long cycle, so two schedulers
  can enqueue the same run (rq-scheduler issue 312): here each due run is *claimed* atomically
  (a Lua script moves the entry to its next run time only if it is still due), so exactly one
  scheduler enqueues it whatever happens to the lock;
* its jobs live outside RQ's registries, so :func:`list_periodic_jobs` and the stats read its
  sorted set directly.

Registration is idempotent: a periodic job whose definition has not changed is left alone; a
changed one (new interval) replaces the old entry.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler
from rq_scheduler.utils import get_next_scheduled_time

from core import keys, lifecycle, scripts
from core.config import get_settings
from core.connection import get_redis
from core.errors import JobNotFoundError
from core.redis_queues import get_queue

logger = logging.getLogger(__name__)

ID_PREFIX = "periodic-"



class ScheduledTaskJob(RQJob):
    """rq-scheduler's template of a periodic job: JSON whatever serializer it asks for.

    It is never run by RQ: each due run is created through :func:`core.lifecycle.enqueue` under
    the same id, so it is counted, claimed and finished like every other job."""

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


@dataclass(frozen=True)
class PeriodicJob:
    id: str
    name: str
    task: str
    queue: str  # short name
    kwargs: dict[str, Any] = field(default_factory=dict)
    interval: int | None = None  # seconds
    cron: str | None = None  # UTC

    @property
    def trigger(self) -> str:
        if self.interval:
            return f"every {self.interval // 60} min" if self.interval % 60 == 0 else f"every {self.interval} s"
        return f"cron {self.cron} UTC"

    def signature(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def periodic_definitions() -> list[PeriodicJob]:
    """Every periodic job, from the settings."""
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


class JsonScheduler(Scheduler):
    """rq-scheduler with JSON jobs, registered tasks only, and atomic claiming of due runs."""

    job_class = ScheduledTaskJob

    def __init__(self, interval: float | None = None, connection: Any = None, name: str | None = None) -> None:
        super().__init__(queue_name=get_queue("email").name, interval=interval or get_settings().scheduler_interval,
                         connection=connection or get_redis(), job_class=ScheduledTaskJob, name=name)

    def enqueue_job(self, job: Any) -> None:
        next_time = ""
        if job.meta.get("interval"):
            next_time = str(int(time.time()) + int(job.meta["interval"]))
        elif job.meta.get("cron_string"):
            next_time = str(int(get_next_scheduled_time(job.meta["cron_string"]).replace(tzinfo=UTC).timestamp()))
        claimed = scripts.run("periodic_claim", self.connection, [self.scheduled_jobs_key],
                              [job.id, int(time.time()), next_time])
        if not claimed:
            logger.info("periodic run of %s already claimed by another scheduler", job.id)
            return
        if self.connection.sismember(_paused_key(), job.id):
            logger.info("periodic job %s is paused; skipped this run", job.id)
            return
        status, ours = self.connection.hmget(keys.job(job.id), "status", "fk_task")
        if ours is not None and status is not None and status.decode() in lifecycle.LIVE_STATUSES:
            logger.warning("periodic job %s: the previous run has not finished; skipped this run", job.id)
            return
        queue_short = lifecycle.short_name(job.origin)
        interval = int(job.meta.get("interval") or 0)
        run = lifecycle.NewJob(
            job_id=job.id, task_name=job.func_name, kwargs=job.kwargs, max_retries=0,
            timeout=int(job.timeout or get_settings().timeout_for(queue_short)), check_existing=True,
            # the template's meta (interval, cron) must survive the run; keep it past the next run
            extra_fields=["meta", json.dumps(job.meta), "description", job.description or ""],
            result_ttl=max(2 * 86_400, 2 * interval), failure_ttl=max(get_settings().failure_ttl, 2 * interval),
        )
        lifecycle.enqueue(self.connection, queue_short, [run])
        self.connection.hset(_last_run_key(), job.id, time.time())
        logger.info("periodic job %s enqueued (%s)", job.id, job.func_name)


def _scheduler() -> JsonScheduler:
    return JsonScheduler()


def register_periodic_jobs() -> list[dict[str, Any]]:
    """Create or update every periodic job; unchanged ones are left as they are."""
    scheduler = _scheduler()
    connection = scheduler.connection
    wanted = {d.id: d for d in periodic_definitions()}
    for definition in wanted.values():
        existing = _fetch(definition.id)
        scheduled = connection.zscore(scheduler.scheduled_jobs_key, definition.id) is not None
        if existing is not None and scheduled and existing.meta.get("definition") == definition.signature():
            continue
        if existing is not None:
            scheduler.cancel(existing)
        _schedule(scheduler, definition)
        logger.info("registered periodic job %s (%s)", definition.id, definition.trigger)
    for job_id in connection.zrange(scheduler.scheduled_jobs_key, 0, -1):
        job_id = job_id.decode()
        if job_id.startswith(ID_PREFIX) and job_id not in wanted:
            connection.zrem(scheduler.scheduled_jobs_key, job_id)
            logger.info("removed periodic job %s: no longer defined", job_id)
    connection.set(registered_marker_key(), int(time.time()))
    return list_periodic_jobs()


def _schedule(scheduler: JsonScheduler, definition: PeriodicJob) -> None:
    queue_name = get_queue(definition.queue).name
    meta = {"definition": definition.signature(), "max_retries": 0, "periodic": definition.id}
    common = {"kwargs": definition.kwargs, "id": definition.id, "queue_name": queue_name,
              "description": definition.name, "meta": meta, "result_ttl": get_settings().result_ttl,
              "timeout": get_settings().timeout_for(definition.queue)}
    if definition.interval:
        scheduler.schedule(datetime.now(UTC).replace(tzinfo=None), definition.task,
                           interval=definition.interval, **common)
    else:
        scheduler.cron(definition.cron, definition.task, **common)


def _fetch(job_id: str) -> ScheduledTaskJob | None:
    try:
        return ScheduledTaskJob.fetch(job_id, connection=get_redis())
    except Exception:
        return None


def list_periodic_jobs() -> list[dict[str, Any]]:
    """Every registered periodic job with its trigger, next run, pause state and last run."""
    connection = get_redis()
    definitions = {d.id: d for d in periodic_definitions()}
    scheduled = dict(connection.zrange(Scheduler.scheduled_jobs_key, 0, -1, withscores=True))
    paused = {m.decode() for m in connection.smembers(_paused_key())}
    last = {k.decode(): float(v) for k, v in connection.hgetall(_last_run_key()).items()}
    out = []
    for job_id, definition in definitions.items():
        score = scheduled.get(job_id.encode())
        out.append({
            "id": job_id, "name": definition.name, "task": definition.task, "queue": definition.queue,
            "trigger": definition.trigger, "kwargs": definition.kwargs,
            "next_run": float(score) if score is not None else None,
            "registered": score is not None, "paused": job_id in paused, "last_run": last.get(job_id),
        })
    return out


def count_periodic_jobs() -> int:
    return get_redis().zcard(Scheduler.scheduled_jobs_key)


def _require(periodic_id: str) -> dict[str, Any]:
    for entry in list_periodic_jobs():
        if entry["id"] == periodic_id and entry["registered"]:
            return entry
    known = ", ".join(e["id"] for e in list_periodic_jobs() if e["registered"]) or "none"
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
    """Unschedule until the next registration (a scheduler restart re-registers definitions)."""
    _require(periodic_id)
    connection = get_redis()
    connection.zrem(Scheduler.scheduled_jobs_key, periodic_id)
    connection.srem(_paused_key(), periodic_id)
