"""The threading fallback: run jobs in-process while Redis is unreachable.

Web handlers must never block, even when Redis is down, so ``enqueue_job`` hands the job to a
bounded thread pool here and returns its id at once. The same retries and back-off apply; the
job's status is kept in memory (bounded) and read through the same ``get_job_status``, marked
``mode="fallback"``. It lives in one process: in a multi-process web server, a fallback job is
visible in the process that accepted it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from core.backoff import retry_delays
from core.config import get_settings
from core.errors import QueueUnavailableError
from core.job_model import Job, JobStatus
from core.task_registry import TaskSpec

logger = logging.getLogger(__name__)


class FallbackExecutor:
    """A bounded pool plus a bounded memory of the jobs it ran."""

    def __init__(self, workers: int | None = None, max_pending: int | None = None, keep: int | None = None) -> None:
        settings = get_settings()
        self._workers = workers or settings.fallback_workers
        self._max_pending = max_pending or settings.fallback_max_pending
        self._keep = keep or settings.fallback_keep
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._pending = 0
        self._timeouts: dict[str, int | None] = {}
        self._lock = threading.Lock()

    # --- submitting -----------------------------------------------------------------------
    def submit(self, job: Job, spec: TaskSpec, delay: float = 0.0, timeout: int | None = None) -> None:
        """Run ``job`` (already carrying its id and payload) after ``delay`` seconds."""
        with self._lock:
            if self._pending >= self._max_pending:
                raise QueueUnavailableError(
                    f"Redis is unreachable and the in-process fallback already holds {self._pending} jobs "
                    f"(JOBS_FALLBACK_MAX_PENDING={self._max_pending}); try again later"
                )
            self._pending += 1
            self._remember(job)
            self._timeouts[job.job_id] = timeout
        self._schedule(job.job_id, spec, delay)

    def _schedule(self, job_id: str, spec: TaskSpec, delay: float) -> None:
        if delay > 0:
            timer = threading.Timer(delay, self._start, args=(job_id, spec))
            timer.daemon = True
            timer.start()
        else:
            self._start(job_id, spec)

    def _start(self, job_id: str, spec: TaskSpec) -> None:
        self._get_pool().submit(self._run, job_id, spec)

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="fikiri-fallback")
            return self._pool

    # --- running --------------------------------------------------------------------------
    def _run(self, job_id: str, spec: TaskSpec) -> None:
        """One attempt through the workers' own runner (:func:`core.runner.run_attempt`)."""
        from core.runner import run_attempt

        job = self.get(job_id)
        if job is None or job.status == JobStatus.CANCELED:
            self._done(job_id)
            return
        self._update(job_id, status=JobStatus.RUNNING, started_at=time.time())
        attempt = run_attempt(job_id, job.queue, spec.name, job.payload, self._timeouts.get(job_id),
                              lambda value: self._update(job_id, progress=value))
        if attempt.ok:
            logger.info("fallback job %s task=%s duration=%.3fs outcome=completed", job_id, spec.name, attempt.duration)
            self._update(job_id, status=JobStatus.COMPLETED, result=json.loads(attempt.result_json), error=None,
                         completed_at=time.time())
        elif attempt.retryable and job.retry_count < job.max_retries:
            delay = retry_delays(job.max_retries)[job.retry_count]
            logger.warning("fallback job %s task=%s outcome=retrying in %ss error=%r", job_id, spec.name, delay,
                           (attempt.error or "").strip().splitlines()[-1:])
            self._update(job_id, status=JobStatus.RETRYING, error=attempt.error, retry_count=job.retry_count + 1)
            self._schedule(job_id, spec, delay)
            return
        else:
            logger.error("fallback job %s task=%s outcome=failed error=%r", job_id, spec.name,
                         (attempt.error or "").strip().splitlines()[-1:])
            self._update(job_id, status=JobStatus.FAILED, error=attempt.error, completed_at=time.time())
        self._done(job_id)

    def _done(self, job_id: str) -> None:
        with self._lock:
            self._pending -= 1
            self._timeouts.pop(job_id, None)

    # --- reading and changing -------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return replace(job) if job is not None else None

    def jobs_for_user(self, user_id: str, limit: int) -> list[Job]:
        with self._lock:
            mine = [replace(j) for j in reversed(self._jobs.values()) if j.user_id == user_id]
        return mine[:limit]

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a fallback job that has not started; returns it, or None if unknown."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status in (JobStatus.PENDING, JobStatus.DELAYED, JobStatus.RETRYING):
                job.status = JobStatus.CANCELED
                job.completed_at = time.time()
            return replace(job)

    def pending_count(self) -> int:
        with self._lock:
            return self._pending

    def _remember(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        while len(self._jobs) > self._keep:
            oldest_id, oldest = next(iter(self._jobs.items()))
            if not oldest.status.is_final:
                self._jobs.move_to_end(oldest_id)  # never forget a job that is still going to run
                break
            self._jobs.popitem(last=False)

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                for name, value in changes.items():
                    setattr(job, name, value)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)


_executor: FallbackExecutor | None = None
_executor_lock = threading.Lock()


def get_fallback() -> FallbackExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = FallbackExecutor()
        return _executor
