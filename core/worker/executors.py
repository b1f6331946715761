"""Where a worker runs the jobs it claimed: inline, in threads, or in reused child processes.

Every executor runs a job through :func:`core.execution.runner.run_attempt` and records it with
:func:`core.queue.lifecycle.finish`, so the worker classes differ only in isolation and concurrency:

* ``simple``: one job at a time in the worker process (fastest for short jobs, least isolated);
* ``threaded``: up to N jobs at once in threads (I/O-bound work: mail, HTTP, LLM calls);
* ``prefork`` (default): N child processes forked once and reused, like Celery's prefork pool;
  a child is replaced after ``JOBS_WORKER_MAX_JOBS_PER_CHILD`` jobs or above
  ``JOBS_WORKER_MAX_CHILD_MEMORY_MB`` of RSS, so a leaking task cannot grow forever. By default
  each child claims and records its own jobs (core/worker/direct.py); PreforkExecutor here is the
  pool whose parent claims for its children (``JOBS_WORKER_PREFORK_CLAIMS=parent``, ``--max-jobs``);
* ``fork``: the prefork pool with one job per child (RQ's isolation: a fresh process per job;
  the next child is forked while the current one runs, off the job's path).

Children die with their parent (``PR_SET_PDEATHSIG``), so a SIGKILLed worker never leaves a
job running as an orphan while the sweep hands it to another worker.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import resource
import select
import selectors
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from core.config import get_settings
from core.execution import stopping
from core.execution.runner import run_attempt
from core.platform import tracing
from core.platform.connection import REDIS_DOWN, REDIS_REFUSING, new_redis
from core.queue import lifecycle, lua_scripts, task_metrics
from core.queue.lifecycle import AttemptResult, ClaimedJob
from core.worker.prefetch import AdaptivePrefetch

if TYPE_CHECKING:
    from core.worker.loop import Worker

logger = logging.getLogger(__name__)

# "Redis is down" (core.platform.connection holds the one rule) or refusing writes for a while (OOM,
# READONLY): the worker waits and retries through both; neither is a crash
REDIS_ERRORS = (*REDIS_DOWN, *REDIS_REFUSING)
PR_SET_PDEATHSIG = 1
IDLE_FLUSH = 0.5  # s: a pre-forked child flushes its timings this long after its last job
GROUP_COMMIT_WINDOW = 0.002  # s: results of short jobs run back to back are committed together
GROUP_COMMIT_MAX = 16  # ends recorded in one script call at most before the window is up (prefork)
HARD_KILL_GRACE = 10.0  # s past a job's timeout before the parent kills a child that ignores SIGALRM
SHUTDOWN_GRACE = 2.0  # s: a job interrupted at the shutdown deadline may stop by itself this long before it is ended


def progress_sink(connection: Any, job: ClaimedJob) -> Any:
    """Progress goes to the job hash and, as a "progress" event, to the events stream (one script
    call, progress.lua), fenced by the attempt's claim: a stale attempt (its job taken back after a
    lost lease) writes nothing, and that is logged once."""
    maxlen = get_settings().events_maxlen
    refused = False

    def sink(value: Any) -> None:
        nonlocal refused
        if not lifecycle.report_progress(connection, job, json.dumps(value), maxlen) and not refused:
            refused = True
            logger.warning("job %s task=%s attempt %s: progress refused, its lease was lost and the job taken back "
                           "(a stale attempt writes nothing)", job.job_id, job.task_name, job.claim)

    return sink


def attempt(connection: Any, job: ClaimedJob) -> AttemptResult:
    """Run one claimed job (the path every executor shares); never raises. A job stopped while it
    waited in the worker (prefetched, or queued for a pool thread) is not started at all."""
    if job.stop_reason is not None:
        return AttemptResult(ok=False, retryable=False, error=job.stop_reason)
    if job.requeue_reason is not None:  # the shutdown deadline passed before it started: back to its queue
        job.interrupted = True
        return AttemptResult(ok=False, retryable=False, error=job.requeue_reason)
    return run_attempt(job.job_id, job.queue_short, job.task_name, job.kwargs, job.timeout,
                       progress_sink(connection, job), job.undecodable, job.trace)


def execute(connection: Any, job: ClaimedJob, worker_name: str) -> str | None:
    """Run one claimed job and record its end."""
    return finish_retrying(connection, [(job, attempt(connection, job))], worker_name)[0]


def finish_retrying(connection: Any, finished: list[tuple[ClaimedJob, AttemptResult]], worker_name: str,
                    patience: float = 30.0, starts: list[tuple[ClaimedJob, float]] | None = None) -> list[str | None]:
    """:func:`lifecycle.finish_many`, retried while Redis is unreachable (restarts take seconds).

    If Redis stays away longer, the outcomes are dropped and the jobs' leases expire: the sweep
    retries them (at least once, never lost).
    """
    if any(job.interrupted for job, _attempt in finished):
        return _finish_interrupted(connection, finished, worker_name, patience)
    delay, deadline = 0.2, time.monotonic() + patience
    while True:
        try:
            return lifecycle.finish_many(connection, finished, worker_name, starts=starts)
        except REDIS_ERRORS as exc:
            error = exc
        if time.monotonic() > deadline:
            logger.error("could not record the end of %d job(s) (%s); the sweep will retry them", len(finished),
                         error)
            return [None] * len(finished)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _finish_interrupted(connection: Any, finished: list[tuple[ClaimedJob, AttemptResult]], worker_name: str,
                       patience: float) -> list[str | None]:
    """Attempts interrupted at the shutdown deadline go back to the head of their queues (no retry,
    no stall: lifecycle.release); the others are recorded as usual."""
    interrupted = [job for job, _attempt in finished if job.interrupted]
    delay, deadline = 0.2, time.monotonic() + patience
    while True:
        try:
            lifecycle.release(connection, interrupted, interrupted[0].requeue_reason or "interrupted")
            break
        except REDIS_ERRORS as exc:
            if time.monotonic() > deadline:
                logger.error("could not requeue %d interrupted job(s) (%s); the sweep will", len(interrupted), exc)
                break
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    rest = [(job, result) for job, result in finished if not job.interrupted]
    outcomes = iter(finish_retrying(connection, rest, worker_name, patience) if rest else [])
    return ["requeued" if job.interrupted else next(outcomes) for job, _attempt in finished]


def interrupt_in_thread(job: ClaimedJob) -> None:
    """The shutdown deadline passed (core/worker/loop.py): ask the job to stop, end it after
    SHUTDOWN_GRACE, and requeue it when it returns. A job not started yet never starts (attempt). A
    job blocked in C (a long socket read, time.sleep) is ended only when that call returns: the
    worker yields such a job's lease instead (core.queue.lifecycle.yield_leases)."""
    if stopping.request(job.job_id):
        job.interrupted = True
        timer = threading.Timer(SHUTDOWN_GRACE, stopping.hard_stop, [job.job_id])
        timer.daemon = True
        timer.start()


def record_stall(connection: Any, job: ClaimedJob, reason: str) -> None:
    """A work-horse died under its job (OOM killer, a segfault, a SIGKILL from outside): a stall
    (DESIGN.md "Crashes are stalls"), recorded now rather than after its lease. If Redis is away,
    the lease runs out and the sweep records the same stall."""
    try:
        lifecycle.stalled(connection, [job], reason)
    except REDIS_ERRORS as exc:
        logger.warning("job %s: could not record its stall now (%s); the sweep will after its lease", job.job_id, exc)


def stop_in_thread(job: ClaimedJob, grace: float) -> None:
    """Ask the job to stop (core.execution.stopping.should_stop), and end it after ``grace`` seconds if it
    has not: the simple and threaded workers share this."""
    if not stopping.request(job.job_id):
        return
    timer = threading.Timer(grace, stopping.hard_stop, [job.job_id])
    timer.daemon = True
    timer.start()


class SimpleExecutor:
    """Run each job inline, in the worker's main thread.

    It hands its jobs' ends back to the worker loop (``hands_back``), which records them in the
    same script call as its next claim (lifecycle.finish_and_claim): one round trip per batch."""

    kind = "simple"
    hands_back = True

    def __init__(self, worker: Worker, prefetch: int = 0) -> None:
        self.worker = worker
        self.prefetch = AdaptivePrefetch(prefetch, get_settings().worker_prefetch_budget_ms / 1000)
        self._finished: list[tuple[ClaimedJob, AttemptResult]] = []
        self._started: list[tuple[ClaimedJob, float]] = []

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return 1

    def want(self) -> tuple[int, int]:
        """(jobs to claim, how many of them begin now): the first; the others are claimed ahead
        and begin one after another (their starts are written with the next script call)."""
        return 1 + self.prefetch.ahead(), 1

    def submit_many(self, jobs: list[ClaimedJob]) -> None:
        """Run the claimed jobs one after another. Their ends go to the loop's next claim; a batch
        whose results grow older than GROUP_COMMIT_WINDOW (a slow job) is committed at once."""
        since = time.monotonic()
        for job in jobs:
            if job.ahead:
                self._started.append((job, time.time()))
            result = attempt(self.worker.connection, job)
            self.prefetch.ran(result.duration)
            self._finished.append((job, result))
            if time.monotonic() - since > GROUP_COMMIT_WINDOW and job is not jobs[-1]:
                self._commit()
                since = time.monotonic()

    def _commit(self) -> None:
        pending, self._finished = self._finished, []
        starts, self._started = self._started, []
        try:
            finish_retrying(self.worker.connection, pending, self.worker.name, starts=starts)
        finally:
            for job, _attempt in pending:
                self.worker.job_done(job)

    def take(self) -> tuple[list[tuple[ClaimedJob, AttemptResult]], list[tuple[ClaimedJob, float]]]:
        finished, self._finished = self._finished, []
        started, self._started = self._started, []
        return finished, started

    def ends_due_in(self) -> float:
        """Seconds until the ends in hand must be recorded: at once (nothing else runs meanwhile)."""
        return 0.0 if self._finished or self._started else float("inf")

    def give_back(self, finished: list[tuple[ClaimedJob, AttemptResult]],
                  starts: list[tuple[ClaimedJob, float]]) -> None:
        """Ends and starts the loop could not record (Redis away): kept for its next try."""
        self._finished = finished + self._finished
        self._started = starts + self._started

    def take_buffered(self) -> list[ClaimedJob]:
        return []

    def claimed(self, asked: int, got: int) -> None:
        self.prefetch.claimed(asked, got)

    def poll(self, timeout: float) -> None:
        pass

    def wait_readable(self, sock: Any, timeout: float) -> bool:
        """Block until ``sock`` (the worker's blocking pop) is readable: nothing else runs meanwhile."""
        return bool(select.select([sock], [], [], timeout)[0])

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.05))

    def busy(self) -> int:
        return 0

    def children_rss_kb(self) -> int:
        return 0  # jobs run in this process

    def stop_job(self, job: ClaimedJob) -> None:
        stop_in_thread(job, self.worker.settings.stop_grace)

    def interrupt_job(self, job: ClaimedJob) -> None:
        interrupt_in_thread(job)

    def stop(self, wait: bool) -> None:
        pass

    def kill(self) -> None:
        pass


class ThreadedExecutor:
    """Up to ``size`` jobs at once, each in a pool thread with its own timeout."""

    kind = "threaded"

    def __init__(self, worker: Worker, size: int) -> None:
        self.worker = worker
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fikiri-job")
        self._busy = 0
        self._cond = threading.Condition()
        self._results: list[tuple[ClaimedJob, AttemptResult]] = []
        self._committing = False

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        with self._cond:
            return self.size - self._busy

    def submit(self, job: ClaimedJob) -> None:
        with self._cond:
            self._busy += 1
        self._pool.submit(self._run, job)

    def submit_many(self, jobs: list[ClaimedJob]) -> None:
        for job in jobs:
            self.submit(job)

    def _run(self, job: ClaimedJob) -> None:
        """Run the job, then commit its end; if another thread is committing, it takes this result
        along in its next batch (group commit without waiting: an idle pool commits at once)."""
        try:
            result = attempt(self.worker.connection, job)
        except Exception as exc:  # run_attempt never raises; this is a last resort
            logger.exception("job %s crashed its thread", job.job_id)
            result = AttemptResult(ok=False, error=f"worker thread crashed: {exc!r}")
        with self._cond:
            self._results.append((job, result))
            self._busy -= 1
            self._cond.notify_all()
            if self._committing:
                return
            self._committing = True
        try:
            while True:
                with self._cond:
                    batch, self._results = self._results, []
                    if not batch:
                        self._committing = False
                        return
                try:
                    finish_retrying(self.worker.connection, batch, self.worker.name)
                finally:
                    for done, _result in batch:
                        self.worker.job_done(done)
        except BaseException:
            with self._cond:
                self._committing = False
            raise

    def wait(self, timeout: float) -> None:
        with self._cond:
            if self._busy >= self.size:
                self._cond.wait(timeout)

    def busy(self) -> int:
        with self._cond:
            return self._busy

    def children_rss_kb(self) -> int:
        return 0  # jobs run in this process's threads

    def stop_job(self, job: ClaimedJob) -> None:
        stop_in_thread(job, self.worker.settings.stop_grace)

    def interrupt_job(self, job: ClaimedJob) -> None:
        interrupt_in_thread(job)

    def stop(self, wait: bool) -> None:
        self._pool.shutdown(wait=wait)

    def kill(self) -> None:
        pass


class _Child:
    def __init__(self, pid: int, job_fd: int, result_file: Any) -> None:
        self.pid = pid
        self.job_fd = job_fd
        self.result_file = result_file
        self.job: ClaimedJob | None = None
        self.busy_since = 0.0
        self.timed_out = False  # the parent killed it past its job's timeout: a failed attempt, not a stall
        self.partial = b""  # a message line not read to its end yet


class PreforkExecutor:
    """A pool of ``size`` reused child processes (``max_jobs=1``: a fresh process per job).

    A child runs its job and answers with the attempt's result over its pipe; the parent records
    the ends of all its children in the same script call as its next claim (``hands_back``,
    lifecycle.finish_and_claim), so a busy pool pays about one round trip per batch of jobs and a
    child does no Redis work per job (its progress reports aside). Jobs claimed ahead (adaptive
    prefetch, core/worker/prefetch.py) wait here and go to the first child that frees; their start
    is written with the next call (``starts``)."""

    hands_back = True

    def __init__(self, worker: Worker, size: int, max_jobs: int, max_rss_mb: int, kind: str = "prefork",
                 prefetch: int = 0) -> None:
        self.worker = worker
        self.size = size
        self.kind = kind
        self.max_jobs = max_jobs
        self.max_rss_mb = max_rss_mb
        self._children: dict[int, _Child] = {}
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._feeding = True  # False once the worker stops: jobs claimed ahead are handed back, not started
        self._exiting: list[int] = []  # retired children not reaped yet (waitpid WNOHANG in poll)
        self.prefetch = AdaptivePrefetch(prefetch, get_settings().worker_prefetch_budget_ms / 1000)
        self._ready: deque[ClaimedJob] = deque()  # claimed ahead, not begun
        self._finished: list[tuple[ClaimedJob, AttemptResult]] = []  # ends not recorded yet
        self._started: list[tuple[ClaimedJob, float]] = []  # claimed-ahead jobs begun, start not recorded yet
        self._ends_since: float | None = None  # when the oldest end not recorded yet came back

    # --- children ----------------------------------------------------------------------------
    def start(self) -> None:
        lua_scripts.warm(self.worker.connection)  # before the first fork: no child hashes a script
        _load_libc()
        gc.freeze()  # what the worker has built so far is never walked by a collection again: fewer CoW copies
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                os.close(job_w)
                os.close(result_r)
                for child in self._children.values():  # siblings' pipes: else EOF is never seen
                    os.close(child.job_fd)
                    child.result_file.close()
                _child_main(parent, job_r, result_w, self.worker.name, self.max_jobs, self.max_rss_mb)
            except BaseException:
                logger.exception("work-horse crashed")
            finally:
                os._exit(0)
        os.close(job_r)
        os.close(result_w)
        child = _Child(pid, job_w, os.fdopen(result_r, "rb", buffering=0))
        self._children[pid] = child
        self._selector.register(child.result_file, selectors.EVENT_READ, child)

    def _top_up(self) -> None:
        """Fork the children that should be waiting idle: the pool's free slots (prefork), or for
        ``fork`` one spare per slot, forked while the current job runs so the next job finds a
        child ready (issue 22: forking and reaping on the job's path cost ``fork`` 0.64x RQ)."""
        idle = sum(1 for c in self._children.values() if c.job is None)
        busy = len(self._children) - idle
        want = self.size if self.kind == "fork" else self.size - busy
        for _ in range(want - idle):
            self._spawn()

    def free_slots(self) -> int:
        self.poll(0)
        return self._idle()

    def _idle(self) -> int:
        idle = sum(1 for c in self._children.values() if c.job is None)
        return max(0, min(idle, self.size - (len(self._children) - idle)))

    def want(self) -> tuple[int, int]:
        """(jobs to claim, how many of them begin now): one per idle child not fed from the jobs
        claimed ahead, plus what tops the claimed-ahead jobs up to the adaptive depth."""
        start = max(0, self._idle() - len(self._ready))
        now = time.monotonic()
        running_for = max((now - c.busy_since for c in self._children.values() if c.job is not None), default=0.0)
        ahead = self.prefetch.ahead(running_for)
        if not start and len(self._ready) > ahead // 2:
            return 0, 0  # enough claimed ahead: top up in bigger batches, fewer claims per job
        return start + max(0, ahead - len(self._ready)), start

    def claimed(self, asked: int, got: int) -> None:
        self.prefetch.claimed(asked, got)

    def take(self) -> tuple[list[tuple[ClaimedJob, AttemptResult]], list[tuple[ClaimedJob, float]]]:
        """The ends and starts to record now (the worker loop records them with its next claim)."""
        finished, self._finished = self._finished, []
        started, self._started = self._started, []
        self._ends_since = None
        return finished, started

    def ends_due_in(self) -> float:
        """Seconds until the ends in hand must be recorded (group commit): while the children are fed
        from the jobs claimed ahead, ends wait up to GROUP_COMMIT_WINDOW, or until GROUP_COMMIT_MAX
        of them, to share one script call; inf when there are none."""
        if not self._finished and not self._started:
            return float("inf")
        if self._ends_since is None:
            self._ends_since = time.monotonic()
        if len(self._finished) >= GROUP_COMMIT_MAX or not self._ready:
            return 0.0
        return max(0.0, GROUP_COMMIT_WINDOW - (time.monotonic() - self._ends_since))

    def give_back(self, finished: list[tuple[ClaimedJob, AttemptResult]],
                  starts: list[tuple[ClaimedJob, float]]) -> None:
        """Ends and starts the loop could not record (Redis away): kept for its next try."""
        self._finished = finished + self._finished
        self._started = starts + self._started

    def take_buffered(self) -> list[ClaimedJob]:
        """A stopping worker: no job claimed ahead starts any more; they are handed back."""
        self._feeding = False
        jobs = list(self._ready)
        self._ready.clear()
        return jobs

    def submit_many(self, jobs: list[ClaimedJob]) -> None:
        for job in jobs:
            if job.ahead:
                self._ready.append(job)
            else:
                self.submit(job)
        self._feed()

    def _feed(self) -> None:
        """Give jobs claimed ahead to idle children; their starts go with the next script call."""
        while self._ready and self._feeding and not self._stopping and self._idle() > 0:
            job = self._ready.popleft()
            self._started.append((job, time.time()))
            self.submit(job)

    def submit(self, job: ClaimedJob) -> None:
        child = next((c for c in self._children.values() if c.job is None), None)
        if child is None:  # no idle child (one just died): it waits for the next one
            self._ready.appendleft(job)
            return
        child.job = job
        child.busy_since = time.monotonic()
        # no backlog (the last claim came back short): the child records the end itself, one hop
        # sooner than through this process; with a backlog the end comes back here to be recorded
        # with the next claim (finish_claim)
        job.finish_here = self.prefetch.depth == 0 and not job.ahead
        data = (json.dumps(job.to_wire(), separators=(",", ":")) + "\n").encode()
        try:
            os.write(child.job_fd, data) if len(data) < 65536 else _write_all(child.job_fd, data)
        except OSError:
            self._child_gone(child)
            return
        if self.kind == "fork" and not self._stopping:
            self._top_up()

    def wait(self, timeout: float) -> None:
        self.poll(timeout)

    def wait_readable(self, sock: Any, timeout: float) -> bool:
        """Block until ``sock`` (the worker's blocking pop) is readable, True, or a child answered
        or ``timeout`` passed, False; the children's answers are handled meanwhile."""
        self._selector.register(sock, selectors.EVENT_READ, None)
        try:
            return self.poll(timeout, watch=True)
        finally:
            self._selector.unregister(sock)

    def poll(self, timeout: float, watch: bool = False) -> bool:
        """Handle finished jobs and dead children; block up to ``timeout`` for the first event.
        Returns whether the extra socket of :meth:`wait_readable` was readable."""
        if self._exiting:
            self._exiting = [pid for pid in self._exiting if not _reaped(pid)]
        readable = False
        for key, _events in self._selector.select(timeout):
            if key.data is None:
                readable = True
                continue
            child: _Child = key.data
            data = child.result_file.read(65536)
            if not data:
                self._child_gone(child)
                continue
            *messages, child.partial = (child.partial + data).split(b"\n")
            for message in messages:
                if message.startswith(b"m"):  # a work-horse's timings (task_metrics.forward)
                    _add_metrics(message[1:])
                    continue
                if message.startswith(b"R") and child.job is not None:  # the attempt's result
                    result = _read_result(child.job, message[1:])
                    self.prefetch.ran(result.duration)
                    self._finished.append((child.job, result))
                    child.job = None
                    continue
                if message in (b"d", b"r") and child.job is not None:  # the child recorded the end itself
                    self.prefetch.ran(time.monotonic() - child.busy_since)
                    self.worker.job_done(child.job)
                    child.job = None
                if message == b"r":
                    self._retire(child)
        self._enforce_timeouts()
        self._feed()
        return readable

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for child in list(self._children.values()):
            job = child.job
            if job is not None and job.timeout and now - child.busy_since > job.timeout + HARD_KILL_GRACE:
                logger.error("work-horse %s ignored the %ss timeout of job %s; killing it", child.pid, job.timeout,
                             job.job_id)
                child.timed_out = True
                _kill(child.pid)

    def _retire(self, child: _Child) -> None:
        """A child that reached its job or memory limit exits; put a fresh one in its place."""
        self._forget(child)
        if not self._stopping:
            self._top_up()  # before the reap: the old child's exit (its address space) is off the job path
        if not _reaped(child.pid):
            self._exiting.append(child.pid)

    def _child_gone(self, child: _Child) -> None:
        self._forget(child)
        status = _reap(child.pid)
        job = child.job
        if job is not None:
            self._record_start(job)
            reason = f"work-horse {child.pid} died ({status}) while running the job"
            logger.error("job %s: %s", job.job_id, reason)
            if job.interrupted:  # the shutdown deadline: back to its queue, no retry, no stall
                finish_retrying(self.worker.connection, [(job, AttemptResult(ok=False, error=reason))],
                                self.worker.name)
            elif job.stop_reason is None and not child.timed_out:
                record_stall(self.worker.connection, job, reason)
            else:  # stopped, or killed past its timeout: the attempt ends as such
                lost = AttemptResult(ok=False, error=reason, duration=time.monotonic() - child.busy_since)
                finish_retrying(self.worker.connection, [(job, lost)], self.worker.name)
            self.worker.job_done(job)
        if not self._stopping:
            self._top_up()

    def _record_start(self, job: ClaimedJob) -> None:
        """A job claimed ahead whose start is not written yet ends now (its child died): write the
        start first, so the lost attempt counts as one (abandon.lua skips a job never begun)."""
        mine = [pair for pair in self._started if pair[0] is job]
        if not mine:
            return
        self._started = [pair for pair in self._started if pair[0] is not job]
        try:
            lifecycle.finish_many(self.worker.connection, [], self.worker.name, starts=mine)
        except REDIS_ERRORS as exc:
            logger.warning("job %s: could not record its start (%s)", job.job_id, exc)

    def _forget(self, child: _Child) -> None:
        self._children.pop(child.pid, None)
        try:
            self._selector.unregister(child.result_file)
        except (KeyError, ValueError):
            pass
        try:
            os.close(child.job_fd)
        except OSError:
            pass
        child.result_file.close()

    def busy(self) -> int:
        return sum(1 for c in self._children.values() if c.job is not None)

    def children_rss_kb(self) -> int:
        return sum(rss_kb(pid) for pid in list(self._children))

    def stop_job(self, job: ClaimedJob) -> None:
        """End the work-horse running ``job`` (the parent records the job as stopped)."""
        for child in list(self._children.values()):
            if child.job is not None and child.job.member == job.member:  # this attempt, not a newer one
                child.job.stop_reason = job.stop_reason
                _kill(child.pid)

    def interrupt_job(self, job: ClaimedJob) -> None:
        """The shutdown deadline passed: end the work-horse running ``job``; the parent requeues it
        (_child_gone). A work-horse is a process, so this works whatever the job is blocked in."""
        for child in list(self._children.values()):
            if child.job is job:
                job.interrupted = True
                _kill(child.pid)

    def stop(self, wait: bool) -> None:
        """Warm stop: let every job in hand finish, then close the pipes (children exit)."""
        self._stopping = True
        while wait and self.busy():
            self.poll(1.0)
        for child in list(self._children.values()):
            self._forget(child)
            _reap(child.pid, block=True)
        for pid in self._exiting:
            _reap(pid, block=True)
        self._exiting = []

    def kill(self) -> None:
        self._stopping = True
        for child in list(self._children.values()):
            _kill(child.pid)
            _reap(child.pid, block=True)
        for pid in self._exiting:
            _reap(pid, block=True)
        self._exiting = []


def _read_result(job: ClaimedJob, text: bytes) -> AttemptResult:
    """A work-horse's answer: the attempt's result as JSON (see _child_main)."""
    try:
        data = json.loads(text)
        if data.pop("interrupted", False):
            job.interrupted = True
        return AttemptResult(**data)
    except (ValueError, TypeError) as exc:
        logger.error("job %s: its work-horse sent an unreadable result (%s): %r", job.job_id, exc, text[:200])
        return AttemptResult(ok=False, error=f"the work-horse's result was unreadable ({exc})")


def _add_metrics(text: bytes) -> None:
    try:
        for record in json.loads(text):
            task_metrics.buffer().add(*record)
    except (ValueError, TypeError):
        logger.warning("a work-horse sent unreadable timings: %r", text[:200])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int, block: bool = True) -> str:
    try:
        _pid, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return "already reaped"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _reaped(pid: int) -> bool:
    """Reap an exited child without waiting; False while it is still exiting."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


_libc: Any = None  # loaded once in the parent (start): a work-horse inherits it


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return _libc


def _die_with_parent(parent: int) -> None:
    try:
        libc = _load_libc()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the lease still fences a late finish
        logger.debug("PR_SET_PDEATHSIG is not available")
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


PARENT_CHECK = 0.5  # s: how often a work-horse checks that its parent is alive (besides PR_SET_PDEATHSIG)


def _watch_parent(parent: int) -> None:
    """A second guard beside PR_SET_PDEATHSIG (which fires on the death of the *thread* that forked,
    and exists only on Linux): a thread checks the parent's pid every PARENT_CHECK and ends this
    work-horse, job and all, once it is orphaned. The sweep takes the job back only after its lease
    (seconds), so the orphan is gone well before another run can start."""
    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="fikiri-parent-watch", daemon=True).start()


def rss_kb(pid: int | str = "self") -> int:
    """Resident memory of a process now (not its peak), from /proc; 0 where that is unreadable."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _connect_now(connection: Any) -> None:
    """Open the work-horse's connection before its job arrives: the TCP connect and handshake (and
    the copy-on-write faults of that code) happen while the previous job runs, off this job's path."""
    pool = connection.connection_pool
    try:
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py 5 names the command
            conn = pool.get_connection("PING")
        pool.release(conn)
    except REDIS_ERRORS:
        pass  # the job's own commands retry the connection and report an outage


def _child_main(parent: int, job_fd: int, result_fd: int, worker_name: str, max_jobs: int, max_rss_mb: int) -> None:
    """A work-horse: read a job per line, run it, answer its result (``R`` + JSON) then ``d`` (or ``r``:
    retiring). The parent records the end."""
    gc.freeze()  # the parent's objects: a collection never walks (and so never copies) their pages
    _die_with_parent(parent)
    _watch_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    task_metrics.reset_buffer()  # what the parent had not flushed yet is the parent's to flush
    if max_jobs == 1:  # one job: its timing goes to the parent with its "done", not in a round trip of its own
        task_metrics.buffer().forward()
    tracing.after_fork()
    connection = new_redis()
    _connect_now(connection)
    jobs_in = os.fdopen(job_fd, "rb")
    done = 0
    last_flush = time.monotonic()
    dirty = False
    while True:
        # timings are flushed once a second under load, and half a second after going idle; the
        # parent sends one job at a time, so nothing waits in the reader's buffer meanwhile
        if dirty and not select.select([jobs_in], [], [], IDLE_FLUSH)[0]:
            task_metrics.buffer().flush(connection)
            last_flush, dirty = time.monotonic(), False
        line = jobs_in.readline()
        if not line or os.getppid() != parent:  # closed, or orphaned: never start a job without a parent
            break
        job = ClaimedJob.from_wire(json.loads(line))
        if job.finish_here:
            execute(connection, job, worker_name)
            result_line = b""
        else:
            result = attempt(connection, job)  # the parent records its end (with its next claim)
            message = {**result.__dict__, "interrupted": job.interrupted} if job.interrupted else result.__dict__
            result_line = b"R" + json.dumps(message, separators=(",", ":")).encode() + b"\n"
        done += 1
        dirty = True
        if time.monotonic() - last_flush >= 1.0:
            task_metrics.buffer().flush(connection)
            last_flush, dirty = time.monotonic(), False
        retiring = done >= max_jobs or (max_rss_mb and _rss_mb() > max_rss_mb)
        answer = result_line + (b"r\n" if retiring else b"d\n")
        forwarded = task_metrics.buffer().take_forwarded()
        if forwarded:
            answer = b"m" + json.dumps(forwarded, separators=(",", ":")).encode() + b"\n" + answer
        _write_all(result_fd, answer)
        if retiring:
            break
    task_metrics.buffer().flush(connection)
