"""The ``async`` worker class: ``async def`` tasks by the hundred on one event loop.

A job that waits on the network (an LLM call, the Gmail API, a CRM or webhook POST) holds a
thread of the threaded worker for its whole wait, so 32 threads give at most 320 jobs/s of 100 ms.
Here each job is an asyncio task on one loop thread: ``JOBS_WORKER_ASYNC_CONCURRENCY`` (default
100; ``--concurrency`` overrides it) jobs wait at once for the price of a coroutine each. Measured
in bench/async_tasks.py: 10,000 jobs of ``asyncio.sleep(0.1)`` on one process.

* **One runner.** An async task runs through :func:`core.execution.runner.run_attempt_async`, a
  sync one through :func:`core.worker.executors.attempt` in one of ``JOBS_WORKER_CONCURRENCY``
  threads beside the loop (so a sync task never blocks the loop): the same refusals, retries and
  filters, result rules, events and limits (claim and finish are the other classes' own). The
  timeout and a hard stop cancel an awaiting task at its ``await``; the loop's other jobs go on.
* **Group commit.** Ends are recorded by one committer thread, every end that arrived while it
  was writing going in its next ``finish`` call: under load one round trip records many jobs,
  at idle an end is written at once. The loop itself never waits on Redis for a finish.
* **Stopping.** A warm stop lets every job in hand end and be recorded, until
  ``JOBS_WORKER_SHUTDOWN_TIMEOUT``; then the jobs still running are interrupted (cancelled at their
  await) and requeued; a cold stop is the worker's (the jobs go back to their queues, the process exits).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from core.execution.runner import is_async, run_attempt_async
from core.queue.lifecycle import AttemptResult, ClaimedJob
from core.worker.executors import attempt, finish_retrying, interrupt_in_thread, progress_sink, stop_in_thread

if TYPE_CHECKING:
    from core.worker.loop import Worker

logger = logging.getLogger(__name__)


class AsyncExecutor:
    """Up to ``size`` jobs at once: async tasks on one event loop, sync tasks in ``threads`` threads."""

    kind = "async"

    def __init__(self, worker: Worker, size: int, threads: int) -> None:
        self.worker = worker
        self.size = size
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._serve_loop, name="fikiri-async-loop", daemon=True)
        self._sync_pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fikiri-job")
        self._committer = threading.Thread(target=self._commit_loop, name="fikiri-async-commit", daemon=True)
        self._cond = threading.Condition()
        self._busy = 0
        self._results: list[tuple[ClaimedJob, AttemptResult]] = []
        self._committing = 0  # ends taken by the committer and not yet recorded
        self._closing = False
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self._loop_thread.start()
        self._committer.start()

    def _serve_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # --- running -------------------------------------------------------------------------------
    def free_slots(self) -> int:
        with self._cond:
            return self.size - self._busy

    def submit_many(self, jobs: list[ClaimedJob]) -> None:
        """Hand the claimed jobs to the loop in one wake-up of its thread."""
        with self._cond:
            self._busy += len(jobs)
        self._loop.call_soon_threadsafe(self._start_all, jobs)

    def _start_all(self, jobs: list[ClaimedJob]) -> None:
        for job in jobs:
            task = self._loop.create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: ClaimedJob) -> None:
        connection = self.worker.connection
        try:
            if job.stop_reason is None and not job.undecodable and is_async(job.queue_short, job.task_name):
                result = await run_attempt_async(job.job_id, job.queue_short, job.task_name, job.kwargs, job.timeout,
                                                 progress_sink(connection, job), None, job.trace)
            else:  # a sync task (or a refusal): in a thread, so the loop never blocks on it
                result = await self._loop.run_in_executor(self._sync_pool, attempt, connection, job)
        except asyncio.CancelledError:  # not a stop (run_attempt_async turns those into JobStopped)
            logger.warning("job %s: its task was cancelled", job.job_id)
            result = AttemptResult(ok=False, error="CancelledError: the job's asyncio task was cancelled")
        except Exception as exc:  # the runners never raise; this is a last resort
            logger.exception("job %s crashed the async worker's loop", job.job_id)
            result = AttemptResult(ok=False, error=f"async worker crashed running it: {exc!r}")
        with self._cond:
            self._results.append((job, result))
            self._busy -= 1
            self._cond.notify_all()

    # --- recording ends --------------------------------------------------------------------------
    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._results and not self._closing:
                    self._cond.wait()
                if not self._results:
                    return
                batch, self._results = self._results, []
                self._committing = len(batch)
            try:
                finish_retrying(self.worker.connection, batch, self.worker.name)
            except Exception:  # finish_retrying gives up on Redis by itself; a bug must not stop recording
                logger.exception("could not record the end of %d job(s); the sweep will retry them", len(batch))
            finally:
                for job, _result in batch:
                    self.worker.job_done(job)
                with self._cond:
                    self._committing = 0
                    self._cond.notify_all()

    # --- the worker's interface --------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        with self._cond:
            if self._busy >= self.size:
                self._cond.wait(timeout)

    def busy(self) -> int:
        with self._cond:
            return self._busy

    def children_rss_kb(self) -> int:
        return 0  # jobs run in this process

    def stop_job(self, job: ClaimedJob) -> None:
        """Ask the job to stop; after ``JOBS_STOP_GRACE`` an async one is cancelled at its await."""
        stop_in_thread(job, self.worker.settings.stop_grace)

    def interrupt_job(self, job: ClaimedJob) -> None:
        """The shutdown deadline passed (core/worker/loop.py): an async job is cancelled at its await
        after the grace, a sync one in its thread as in the threaded worker; either goes back to its
        queue without using a retry or a stall (finish_retrying sees ``job.interrupted``)."""
        interrupt_in_thread(job)

    def stop(self, wait: bool) -> None:
        """Warm stop: every job in hand ends and is recorded, then the loop and threads end."""
        with self._cond:
            while wait and (self._busy or self._results or self._committing):
                self._cond.wait(1.0)
            self._closing = True
            self._cond.notify_all()
        if self._committer.is_alive():
            self._committer.join(timeout=60)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=10)
        self._sync_pool.shutdown(wait=wait)

    def kill(self) -> None:
        pass  # a cold stop: the worker requeues the jobs in hand and exits the process
