"""The threaded worker: one process running up to N jobs at once (``--worker-class threaded``).

Most of our jobs wait on the network (Gmail, SMTP, an LLM). RQ's workers run one job at a time
per process; this one dequeues a job whenever one of its N threads is free, so a single process
keeps N I/O-bound jobs in flight, with the same guarantees as the fork worker:

* every job in hand has its own execution in RQ's started registry, kept alive by a heartbeat
  thread, so a SIGKILLed process loses nothing (the sweep retries its jobs);
* per-job timeouts use RQ's ``TimerDeathPenalty`` (an exception raised in the job's thread);
  a thread blocked inside a C call (a socket read without a timeout) notices it only when the
  call returns, so tasks should set their own I/O timeouts, as ours do;
* SIGTERM stops dequeuing and finishes every job in hand, then exits 0; a second signal puts
  every job in hand back at the front of its queue and exits at once;
* only registered tasks run; one log line and one outcome record per job.

It runs jobs in-process like ``simple`` (no fork), so it is also the fast mode for short jobs.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty
from rq.utils import now
from rq.worker.base import WorkerStatus

from core.worker import TaskWorkerMixin

logger = logging.getLogger(__name__)


class ThreadedTaskWorker(TaskWorkerMixin, SimpleWorker):
    death_penalty_class = TimerDeathPenalty

    def __init__(self, *args: Any, concurrency: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency
        self._slots = threading.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fikiri-job")
        self._active: dict[str, tuple[Any, Any, Any]] = {}  # execution id -> (job, queue, execution)
        self._active_lock = threading.Lock()
        self._interruptible = False
        self._beating = threading.Event()
        self._beat_thread: threading.Thread | None = None

    # --- dequeue and run ------------------------------------------------------------------
    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if self._stop_requested:
            raise StopRequested()
        self._start_heartbeats()
        self._interruptible = True
        try:
            self._wait_for_slot()
            self._slots.release()  # a slot is free; execute_job takes it for real
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        finally:
            self._interruptible = False
        if self._active:
            self.set_state(WorkerStatus.BUSY)
        return result

    def _wait_for_slot(self) -> None:
        while not self._slots.acquire(timeout=1.0):
            if self._stop_requested:
                raise StopRequested()

    def execute_job(self, job: Any, queue: Any) -> None:
        self._slots.acquire()
        execution = self.prepare_execution(job)
        with self._active_lock:
            self._active[execution.id] = (job, queue, execution)
        self._pool.submit(self._run, job, queue, execution)

    def _run(self, job: Any, queue: Any, execution: Any) -> None:
        try:
            self.perform_job(job, queue, execution)
        except Exception:
            logger.exception("job %s crashed its thread", job.id)
        finally:
            with self._active_lock:
                self._active.pop(execution.id, None)
                idle = not self._active
            self._slots.release()
            if idle:
                try:
                    self.set_state(WorkerStatus.IDLE)
                except Exception:
                    logger.exception("could not record the worker as idle")

    def get_current_job(self) -> Any:
        with self._active_lock:
            first = next(iter(self._active.values()), None)
        return first[0] if first else None

    # --- heartbeats for every job in hand -------------------------------------------------------
    def _start_heartbeats(self) -> None:
        if self._beat_thread is None:
            self._beat_thread = threading.Thread(target=self._heartbeat_loop, name="fikiri-heartbeat", daemon=True)
            self._beat_thread.start()

    def _heartbeat_loop(self) -> None:
        while not self._beating.wait(self.job_monitoring_interval):
            with self._active_lock:
                active = list(self._active.values())
            if not active:
                continue
            try:
                with self.connection.pipeline() as pipe:
                    self.heartbeat(self.job_monitoring_interval + 60, pipeline=pipe)
                    for job, _queue, execution in active:
                        working = (now() - job.started_at).total_seconds() if job.started_at else 0.0
                        ttl = self.get_heartbeat_ttl(job, working_time=working)
                        execution.heartbeat(job.started_job_registry, ttl, pipeline=pipe)
                        job.heartbeat(now(), ttl, pipeline=pipe, xx=True)
                    pipe.execute()
            except Exception:
                logger.exception("heartbeat for %d job(s) failed", len(active))

    # --- shutdown ----------------------------------------------------------------------------
    def request_stop(self, signum: int, frame: Any) -> None:
        """Warm shutdown: stop dequeuing; jobs in hand finish (teardown waits for them)."""
        import signal

        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.handle_warm_shutdown_request()
        self._stop_requested = True
        if self._interruptible:
            raise StopRequested()

    def teardown(self) -> None:
        self._pool.shutdown(wait=True)  # finish every job in hand; heartbeats keep beating
        self._beating.set()
        super().teardown()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Cold shutdown: put every job in hand back at the front of its queue, leave at once."""
        with self._active_lock:
            active = list(self._active.values())
        for job, _queue, execution in active:
            logger.warning("cold shutdown: requeueing job %s", job.id)
            try:
                self.executions = {execution.id: execution}
                self._requeue_interrupted(job)
            except Exception:
                logger.exception("could not requeue job %s; the abandoned-job sweep will retry it", job.id)
        try:
            self.register_death()
        finally:
            logging.shutdown()
            os._exit(1)
