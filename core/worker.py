"""Our RQ worker classes: registered tasks only, JSON, one log line per job, fast recovery.

What they add to RQ's ``Worker`` (fork) and ``SimpleWorker`` (no fork):

* a job's started-registry entry expires ``heartbeat interval + grace`` seconds after the last
  heartbeat (RQ uses +60 s), so a job abandoned by a SIGKILLed worker is retried sooner;
* the error of every failed attempt is kept on the job (``meta["error"]``), so a retrying job
  shows why it is retrying;
* a cold shutdown (second SIGTERM/SIGINT) puts the job in hand back at the front of its queue
  at once instead of leaving it for the abandoned-job sweep;
* every execution is logged in one line and counted (:mod:`core.job_events`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq import SimpleWorker, Worker, worker_registration
from rq.job import JobStatus as RQStatus
from rq.queue import Queue
from rq.registry import clean_registries
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.utils import now as rq_now

from core import job_events, monitoring  # noqa: F401  (monitoring registers the metrics recorder)
from core.config import Settings, get_settings
from core.rq_job import SERIALIZER, TaskJob, queue_short_name

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000

_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _compare_and_delete(connection: Any, keys: list[str], args: list[Any]) -> bool:
    return bool(connection.eval(_COMPARE_AND_DELETE, len(keys), *keys, *args))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _duration(job: Any) -> float:
    if job.started_at is None:
        return 0.0
    end = job.ended_at or datetime.now(UTC)
    return max(0.0, (end - job.started_at).total_seconds())


def _task_name(job: Any) -> str:
    try:
        return str(job.func_name)
    except Exception:
        return "<undecodable>"


class TaskWorkerMixin:
    """Behaviour shared by the fork and no-fork workers (see the module docstring)."""

    heartbeat_grace = 15

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        interval = self.job_monitoring_interval  # type: ignore[attr-defined]
        if job.timeout and job.timeout > 0:
            remaining = max(job.timeout - working_time, 1)
            return int(min(remaining, interval)) + self.heartbeat_grace
        return int(interval) + self.heartbeat_grace

    def handle_job_success(self, job: Any, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]
        self._job_ended(job, job_events.COMPLETED, None)

    def handle_job_failure(
        self, job: Any, queue: Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        will_retry = job.should_retry and getattr(self, "_stopped_job_id", None) != job.id
        if exc_string:
            job.meta["error"] = exc_string[-MAX_ERROR_CHARS:]
            try:
                job.save_meta()
            except Exception:
                logger.exception("could not save the error of job %s", job.id)
        super().handle_job_failure(  # type: ignore[misc]
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )
        self._job_ended(job, job_events.RETRYING if will_retry else job_events.FAILED, exc_string)

    def _job_ended(self, job: Any, outcome: str, error: str | None) -> None:
        duration = _duration(job)
        queue = queue_short_name(job.origin or "")
        task = _task_name(job)
        last_line = (error or "").strip().splitlines()[-1:] or [""]
        logger.log(
            logging.INFO if outcome == job_events.COMPLETED else logging.WARNING,
            "job %s task=%s queue=%s duration=%.3fs outcome=%s%s",
            job.id, task, queue, duration, outcome, f" error={last_line[0][:300]!r}" if error else "",
        )
        job_events.record_outcome(
            self.connection,  # type: ignore[attr-defined]
            job_events.JobOutcome(
                job_id=job.id, queue=queue, task_name=task, outcome=outcome, duration=duration,
                error=error, finished_at=time.time(),
            ),
        )

    def prepare_execution(self, job: Any) -> Any:
        """Remember a job whose start could not be recorded (Redis went away right after dequeue).

        A worker serving several queues dequeues with BLPOP, so between the pop and this point the
        job is in no list and no registry; if recording the start fails, :meth:`requeue_unstarted`
        puts it back once Redis answers again.
        """
        try:
            return super().prepare_execution(job)  # type: ignore[misc]
        except (redis.ConnectionError, redis.TimeoutError):
            self.unstarted_job = job
            raise

    def requeue_unstarted(self) -> bool:
        """Put back the job :meth:`prepare_execution` could not start; True if it was requeued."""
        job = getattr(self, "unstarted_job", None)
        if job is None:
            return False
        connection = self.connection  # type: ignore[attr-defined]
        running = [m.decode().split(":")[0] for m in connection.zrange(f"rq:wip:{job.origin}", 0, -1)]
        status = connection.hget(job.key, "status")
        if job.id in running or status != b"queued":
            self.unstarted_job = None
            return False  # its start was recorded after all: the registry sweep owns it
        queue = Queue(job.origin, connection=connection, job_class=TaskJob, serializer=SERIALIZER)
        queue.push_job_id(job.id, at_front=True)
        logger.warning("job %s was dequeued but never started (Redis went away); put back on %s", job.id, job.origin)
        self.unstarted_job = None
        return True

    def run_maintenance_tasks(self) -> None:
        self._reclaim_dead_scheduler_locks()
        super().run_maintenance_tasks()  # type: ignore[misc]

    def clean_registries(self) -> None:
        """RQ's sweep, under a lock that lives one maintenance interval instead of RQ's 899 s.

        RQ's lock is released only by the worker that took it; a worker killed (or cut off from
        Redis) during the sweep left it for 15 minutes, and with it every abandoned job.
        """
        connection = self.connection  # type: ignore[attr-defined]
        ttl = max(5, int(self.maintenance_interval))  # type: ignore[attr-defined]
        for queue in self.queues:  # type: ignore[attr-defined]
            lock_key = f"{get_settings().queue_prefix}:maintenance-lock:{queue.name}"
            if not connection.set(lock_key, self.name, nx=True, ex=ttl):  # type: ignore[attr-defined]
                continue
            try:
                clean_registries(queue, self._exc_handlers)  # type: ignore[attr-defined]
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
            finally:
                _compare_and_delete(connection, keys=[lock_key], args=[self.name])  # type: ignore[attr-defined]
        self.last_cleaned_at = rq_now()

    def _reclaim_dead_scheduler_locks(self) -> None:
        """Free scheduler locks held by a dead scheduler process on this host.

        RQ's scheduler lock outlives a SIGKILLed holder by 61 s; until then nobody moves retries
        and delayed jobs to their queues. A lock whose holder ran on this host under a PID that no
        longer exists is released (compare-and-delete), so our next maintenance takes it over.
        """
        connection = self.connection  # type: ignore[attr-defined]
        hostname = socket.gethostname()
        for queue in self.queues:  # type: ignore[attr-defined]
            lock_key = SCHEDULER_LOCKING_KEY_TEMPLATE % queue.name
            try:
                holder = connection.get(lock_key)
                if not holder:
                    continue
                info = connection.hgetall(SCHEDULER_KEY_TEMPLATE % holder.decode())
                if info.get(b"hostname", b"").decode() != hostname or not info.get(b"pid"):
                    continue
                pid = int(info[b"pid"])
                if _pid_alive(pid):
                    continue
                if _compare_and_delete(connection, keys=[lock_key], args=[holder]):
                    logger.warning("released scheduler lock of %s held by dead PID %s", queue.name, pid)
            except Exception:
                logger.exception("could not check the scheduler lock of %s", queue.name)

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Cold shutdown: stop the job in hand and put it back at the front of its queue."""
        job = None
        try:
            job = self.get_current_job()  # type: ignore[attr-defined]
        except Exception:
            logger.exception("could not read the current job during cold shutdown")
        horse_pid = getattr(self, "horse_pid", 0)
        if job is not None and horse_pid:
            logger.warning("cold shutdown: stopping job %s and requeueing it", job.id)
            self.kill_horse()  # type: ignore[attr-defined]
            self.wait_for_horse()  # type: ignore[attr-defined]
            self._requeue_interrupted(job)
            raise SystemExit(1)
        super().request_force_stop(signum, frame)  # type: ignore[misc]

    def _requeue_interrupted(self, job: Any) -> None:
        queue = Queue(job.origin, connection=self.connection, job_class=TaskJob, serializer=SERIALIZER)  # type: ignore[attr-defined]
        with self.connection.pipeline() as pipe:  # type: ignore[attr-defined]
            execution = next(iter(self.executions.values()), None)  # type: ignore[attr-defined]
            self.cleanup_execution(job, pipeline=pipe, execution=execution)  # type: ignore[attr-defined]
            job.set_status(RQStatus.QUEUED, pipeline=pipe)
            queue.push_job_id(job.id, pipeline=pipe, at_front=True)
            pipe.execute()


class TaskWorker(TaskWorkerMixin, Worker):
    """Fork a work-horse per job (RQ's default isolation): a crashing task cannot take the worker down."""


class SimpleTaskWorker(TaskWorkerMixin, SimpleWorker):
    """Run jobs in the worker process (no fork): faster, less isolated."""

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        # No monitoring loop beats while the job runs in this process, so the entry must outlive
        # the job's own timeout.
        timeout = job.timeout if job.timeout and job.timeout > 0 else get_settings().worker_ttl
        return int(timeout) + self.heartbeat_grace

    def request_force_stop(self, signum: int, frame: Any) -> None:
        # The job runs in this very process, under RQ's bare ``except:``: raising SystemExit here
        # would be recorded as a job failure. Requeue the job, then leave at once.
        job = self.get_current_job()
        if job is None:
            super().request_force_stop(signum, frame)
            return
        logger.warning("cold shutdown: requeueing job %s", job.id)
        try:
            self._requeue_interrupted(job)
            self.register_death()
        finally:
            logging.shutdown()
            os._exit(1)


WORKER_CLASSES = ("fork", "simple", "threaded")


def worker_class_named(kind: str) -> type:
    if kind == "threaded":
        from core.threaded_worker import ThreadedTaskWorker

        return ThreadedTaskWorker
    return {"fork": TaskWorker, "simple": SimpleTaskWorker}[kind]


def build_worker(
    queue_names: list[str],
    connection: Any,
    worker_class: str | None = None,
    name: str | None = None,
    settings: Settings | None = None,
    concurrency: int | None = None,
) -> Any:
    """A worker on ``queue_names`` (full RQ names) tuned from the settings."""
    settings = settings or get_settings()
    kind = worker_class or settings.worker_class
    if kind not in WORKER_CLASSES:
        raise ValueError(f"unknown worker class {kind!r}; accepted: {', '.join(WORKER_CLASSES)}")
    cls = worker_class_named(kind)
    extra = {"concurrency": concurrency or settings.worker_concurrency} if kind == "threaded" else {}
    worker = cls(
        queue_names,
        name=name,
        connection=connection,
        job_class=TaskJob,
        serializer=SERIALIZER,
        worker_ttl=settings.worker_ttl,
        maintenance_interval=settings.worker_maintenance_interval,
        job_monitoring_interval=settings.worker_heartbeat_interval,
        default_result_ttl=settings.result_ttl,
        **extra,
    )
    worker.heartbeat_grace = settings.worker_heartbeat_grace
    return worker
