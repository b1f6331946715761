"""The fallback: jobs accepted while Redis is unreachable are spooled to disk and run in-process.

Web handlers must never fail because Redis is down, so ``enqueue_job`` writes the job to the
durable spool (:mod:`core.fallback.spool`, SQLite on local disk, shared by every process on the host) and
returns its id at once. Then:

* **Any process answers.** Status reads and a user's recent jobs come from the spool file, so
  every gunicorn worker, the CLI and the dashboard see the job (``mode: "fallback"``).
* **Exactly one runner.** A fixed pool of threads per process (``JOBS_FALLBACK_WORKERS``) claims
  due jobs in a transaction with a lease, renewed while the job runs; a dead holder's jobs are
  taken over when the lease runs out (the lost attempt counts). Jobs run through the workers'
  own runner (:func:`core.execution.runner.run_attempt`), and the workers' rule decides what the attempt's
  end means (:func:`core.queue.lifecycle.attempt_outcome`): the same retries and back-off, Retry-After
  deferrals, timeouts, progress, JSON results and log line. Delayed and backing-off jobs wait in
  the spool, not in a thread each.
* **Limits hold.** A spooled job keeps its rate and concurrency limits (:mod:`core.fallback.spool_limits`)
  and priority: the claim applies them per host while Redis is away, and the hand-back gives
  them to Redis with the job.
* **Hand-back.** When Redis answers again, any process with the spool (web processes, and every
  worker at start and each maintenance) moves waiting jobs to Redis with their ids, delays and
  retry counts, and writes finished outcomes to Redis with the normal TTLs; a job running in the
  fallback finishes there first. Each job runs once: a row being handed back is never run here,
  and Redis accepts each id once (``only_if_absent``), so a crash mid-hand-back cannot run a job
  twice. The spool empties.
* **Restart.** A process that starts with Redis still down resumes unfinished spooled jobs on
  its first use of the fallback (any enqueue, status read or health check).
* **Loud.** Spooling logs a warning the first time and every minute while Redis stays away.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from core.config import get_settings
from core.fallback.spool import FINAL, Spool, SpooledJob, priority_name, priority_rank
from core.platform.connection import get_redis, redis_available, redis_description
from core.queue import lifecycle, task_registry
from core.queue.job_model import Job
from core.queue.task_registry import TaskSpec

logger = logging.getLogger(__name__)

WARN_EVERY = 60.0  # s between "still in fallback mode" warnings
PRUNE_EVERY = 1.0  # s: finished rows are pruned at most this often per process, not after every job
END_RETRY_MAX = 1.0  # s: the longest pause between two tries to write an attempt's end
END_WAIT = 5.0  # s: one try to write an end waits this long for the spool, then logs and tries again


class FallbackExecutor:
    """The spool plus this process's runner threads and hand-back."""

    def __init__(self, spool: Spool | None = None) -> None:
        settings = get_settings()
        self.spool = spool or Spool()
        self.owner = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.lease = settings.fallback_lease
        self._threads: list[threading.Thread] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_warning = 0.0
        self._handing_back = threading.Lock()
        self._ended = threading.Condition()  # notified when a runner here ends an attempt (wait_for)
        self.ends = 0  # attempts ended by this process's runners (read under no lock: a wait's marker)
        self._last_prune = 0.0
        self.end_retries = 0  # tries to write an end that failed and were made again (logged)

    # --- submitting -----------------------------------------------------------------------
    def submit(self, job: Job, spec: TaskSpec, delay: float = 0.0, timeout: int | None = None,
               priority: str = "normal", limits: str | None = None, retry_policy: str | None = None,
               group_concurrency: int | None = None) -> str:
        """Spool ``job`` (committed to disk before this returns) and make sure runners are going.
        ``limits``: its ``fk_limits``, held here too and handed back with it; ``retry_policy``: its
        ``fk_retry`` (core.queue.backoff), applied here and handed back with it; ``job.group`` and
        ``group_concurrency``: its job group, taking turns here too and handed back with it."""
        settings = get_settings()
        job_id = self.spool.add(job, time.time() + delay, priority_rank(priority), timeout,
                                settings.fallback_max_pending, limits, retry_policy, job.group, group_concurrency)
        self._warn(job)
        self.start()
        self._wake.set()
        return job_id

    def _warn(self, job: Job) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY:
            return
        self._last_warning = now
        count, _age = self.spool.unfinished()
        logger.warning(
            "FALLBACK MODE: Redis at %s is unreachable; job %s (%s) spooled to %s, %d unfinished there. Jobs run in "
            "this process's %d fallback threads until Redis returns, then move to Redis",
            redis_description(), job.job_id, job.task_name, self.spool.path, count,
            get_settings().fallback_workers)

    # --- runner threads --------------------------------------------------------------------
    def start(self) -> None:
        """Start this process's runner threads (once)."""
        with self._lock:
            if self._threads:
                return
            for index in range(get_settings().fallback_workers):
                thread = threading.Thread(target=self._loop, name=f"fikiri-fallback-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
            renew = threading.Thread(target=self._renew_loop, name="fikiri-fallback-lease", daemon=True)
            renew.start()
            self._threads.append(renew)

    def resume_if_needed(self) -> None:
        """Start the runners if the spool holds unfinished jobs (a restart with Redis still down)."""
        if self._threads or not self.spool.exists():
            return
        if self.spool.unfinished()[0]:
            self.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if redis_available():
                    self.hand_back()
                    if not self.spool.unfinished()[0]:
                        self._wake.wait(1.0)
                        self._wake.clear()
                        continue
                job, abandoned = self.spool.claim(self.owner, self.lease, lifecycle.queue_limit_entry)
                if job is None:
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                self._run(job, abandoned)
            except Exception:
                logger.exception("fallback runner failed; retrying in 1s")
                self._stop.wait(1.0)

    def _run(self, job: SpooledJob, abandoned: bool) -> None:
        from core.execution.runner import run_attempt

        if abandoned:  # a stall: its last holder died mid-attempt (DESIGN.md "Crashes are stalls")
            spec = task_registry.get(job.queue, job.task)
            max_stalls = spec.max_stalls if spec is not None else 1
            logger.warning("fallback job %s task=%s queue=%s abandoned=1 stalls=%d max_stalls=%d mode=fallback: the "
                           "process running it died; its lease was taken over", job.id, job.task, job.queue,
                           job.stalls, max_stalls)
            if job.stalls > max_stalls:
                reason = (f"repeat crash: its attempt was lost {job.stalls} times (max_stalls={max_stalls}); last: "
                          f"abandoned: the process running it in the fallback died")
                self._end(job.id, "failed", None, reason)
                logger.warning("fallback job %s task=%s outcome=failed (repeat crash)", job.id, job.task)
                return
        attempt = run_attempt(job.id, job.queue, job.task, job.payload, job.timeout,
                              lambda value: self.spool.set_progress(job.id, value, self.owner))
        policy = lifecycle.retry_policy_of(job.retry_policy, job.queue, job.task)
        decided = lifecycle.attempt_outcome(attempt, job.retry_count, job.max_retries, job.deferrals, policy)
        if decided.kind == "done":
            outcome = "completed"
            self._end(job.id, "completed", attempt.result_json, None)
        elif decided.kind == "defer":  # Retry-After: uses no retry, as with a worker
            outcome = "deferred"
            self._end(job.id, "delayed", None, decided.error, run_at=time.time() + decided.delay,
                      deferrals=job.deferrals + 1, reason=decided.reason)
        elif decided.kind == "retry":
            outcome = "retrying"
            self._end(job.id, "retrying", None, decided.error, job.retry_count + 1, time.time() + decided.delay)
        else:
            outcome = "failed"
            self._end(job.id, "failed", None, decided.error)
        last = (attempt.error or "").strip().splitlines()[-1:]
        logger.log(logging.INFO if attempt.ok else logging.WARNING,
                   "job %s task=%s queue=%s duration=%.3fs outcome=%s attempt=%d mode=fallback%s", job.id, job.task,
                   job.queue, attempt.duration, outcome, job.retry_count + 1, f" error={last[0][:300]!r}" if last else "")
        with self._ended:
            self.ends += 1
            self._ended.notify_all()
        if time.monotonic() - self._last_prune >= PRUNE_EVERY:
            self._last_prune = time.monotonic()
            self.spool.prune(get_settings().fallback_keep, get_settings().fallback_keep_bytes)

    def _end(self, job_id: str, status: str, result: str | None, error: str | None, *args: Any,
             **kwargs: Any) -> bool:
        """Write an attempt's end, retried until it is written: the job's side effect has happened,
        and an end dropped here would leave the job to its lease and a second run. Each failed try
        (the spool busy past its bound, a disk error) is logged and tried again after a pause
        doubling up to END_RETRY_MAX; the lease is renewed meanwhile (_renew_loop). Returns what
        :meth:`Spool.end` returns: False when another process took the job over (its lease ran out)."""
        pause = 0.01
        tries = 0
        while True:
            try:
                return self.spool.end(job_id, self.owner, status, result, error, *args, wait=END_WAIT, **kwargs)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the end must still be written
                tries += 1
                self.end_retries += 1
                if tries == 1 or tries % 20 == 0:
                    logger.warning("fallback job %s: could not write its end (%s) after %d tries (%s); retrying",
                                   job_id, status, tries, exc)
                time.sleep(pause)
                pause = min(END_RETRY_MAX, pause * 2)

    def _renew_loop(self) -> None:
        """Every second: checkpoint the WAL; every lease/3: renew leases and recount the spool."""
        last_renew = 0.0
        while not self._stop.wait(1.0):
            try:
                self.spool.checkpoint()
                if time.monotonic() - last_renew >= self.lease / 3:
                    self.spool.renew(self.owner, self.lease)
                    self.spool.recount()
                    last_renew = time.monotonic()
            except Exception:
                logger.exception("could not maintain the fallback spool of %s", self.owner)

    # --- hand-back -------------------------------------------------------------------------
    def hand_back(self, connection: Any = None) -> int:
        """Move waiting spooled jobs to Redis and finished outcomes into Redis; returns how many."""
        if not self.spool.exists():
            return 0
        if not self._handing_back.acquire(blocking=False):
            return 0
        try:
            connection = connection or get_redis()
            moved = 0
            while True:
                rows = self.spool.take_for_handback(self.owner, self.lease)
                if not rows:
                    break
                for row in rows:
                    lifecycle.enqueue(connection, row.queue, [_new_job(row)], row.user_id)
                self.spool.delete([r.id for r in rows], self.owner)
                moved += len(rows)
            while True:
                rows = self.spool.finished()
                if not rows:
                    break
                lifecycle.import_outcomes(connection, [_outcome(row) for row in rows])
                self.spool.delete([r.id for r in rows])
                moved += len(rows)
            if moved:
                logger.warning("Redis is back: handed %d spooled job(s) from %s to Redis", moved, self.spool.path)
            return moved
        finally:
            self._handing_back.release()

    # --- reading and changing -------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        if not self.spool.exists():
            return None
        self.resume_if_needed()
        row = self.spool.get(job_id)
        return row.to_job() if row is not None else None

    def wait_for_an_end(self, seen: int, timeout: float) -> None:
        """Block until a runner thread of this process has ended an attempt since :attr:`ends`
        was ``seen``, or ``timeout`` s pass: a ``wait_for`` on a spooled job wakes on its end when
        it runs here (an end between the caller's read and this call returns at once), and re-reads
        the spool after ``timeout`` when another process (or the hand-back) may have ended it."""
        with self._ended:
            self._ended.wait_for(lambda: self.ends != seen, timeout)

    def jobs_for_user(self, user_id: str, limit: int) -> list[Job]:
        if not self.spool.exists():
            return []
        return [row.to_job() for row in self.spool.for_user(user_id, limit)]

    def cancel(self, job_id: str, reason: str = "canceled") -> tuple[Job | None, bool]:
        """Cancel a spooled job that has not started: (the job, or None if it is not spooled;
        whether this call canceled it)."""
        if not self.spool.exists():
            return None, False
        row, canceled = self.spool.cancel(job_id, reason)
        return (row.to_job() if row is not None else None), canceled

    def pending_count(self) -> int:
        if not self.spool.exists():
            return 0
        self.resume_if_needed()
        return self.spool.unfinished()[0]

    def oldest_age(self) -> float | None:
        if not self.spool.exists():
            return None
        return self.spool.unfinished()[1]

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if wait:
            for thread in self._threads:
                thread.join(timeout=5)


def _new_job(row: SpooledJob) -> lifecycle.NewJob:
    return lifecycle.NewJob(
        job_id=row.id, task_name=row.task, kwargs=row.payload, max_retries=row.max_retries,
        timeout=row.timeout or get_settings().timeout_for(row.queue), priority=priority_name(row.priority),
        run_at=row.run_at if row.run_at > time.time() else None, retries=row.retry_count, only_if_absent=True,
        extra_fields=(["fk_error", row.error] if row.error else []) +
                     (["fk_deferrals", row.deferrals] if row.deferrals else []),
        limits=row.limits, expires_at=row.expires_at, retry_policy=row.retry_policy,
        max_stalls=spec.max_stalls if (spec := task_registry.get(row.queue, row.task)) is not None else 1,
        stalls=row.stalls, group=row.group, group_concurrency=row.group_concurrency,
    )


def _outcome(row: SpooledJob) -> lifecycle.ImportedOutcome:
    assert row.status in FINAL
    return lifecycle.ImportedOutcome(
        job_id=row.id, queue=row.queue, task_name=row.task, kwargs=row.payload, status=row.status,
        result_json=row.result, error=row.error, retries=row.retry_count, max_retries=row.max_retries,
        user_id=row.user_id, created_at=row.created_at, started_at=row.started_at,
        completed_at=row.completed_at or time.time(), expires_at=row.expires_at, retry_policy=row.retry_policy,
        group=row.group,
    )


_executor: FallbackExecutor | None = None
_executor_lock = threading.Lock()


def get_fallback() -> FallbackExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = FallbackExecutor()
        return _executor
