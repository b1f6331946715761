"""The prefork pool whose children claim and record for themselves (issue 22, the default).

Each child is its own ``finish_claim`` loop, like a ``simple`` worker: it records a batch of ends
and claims its next jobs in one script call (adaptive prefetch, group commit of up to 2 ms or 16
ends), and when idle it blocks on the queues' wake-up tokens with its claim pipelined behind the
``BLPOP``. The worker (parent) process is off the job path: measured before this (2026-12-07),
every job passed through it twice and it spent 0.174 ms of CPU per job, the serial part of the
pool. Now it only supervises:

* it learns what each child holds from one pipe message per claim (``C``, the jobs' fields but not
  their arguments) and per commit (``E<n>``: the next n ended or handed back, in claim order), and
  keeps those jobs' leases alive with its heartbeat, as for every class;
* which job a child runs, and since when, is in a page of memory shared with it (no syscall per
  job): the parent kills a child past its job's timeout (+ HARD_KILL_GRACE), on a stop request, or
  at the shutdown deadline;
* a child that died: its running job is a stall (or stopped, timed out, requeued, as the parent
  decided), jobs it claimed ahead and never began go back uncounted; a fresh child takes its place;
* a stopping worker sets each child's stop flag (and wakes an idle one): the child ends its job,
  then records its ends and hands its claimed-ahead jobs back in one script call, and exits.

Children die with the parent (PR_SET_PDEATHSIG, and a ppid check before every job and every
second), so a SIGKILLed worker never leaves a job running while the sweep hands it elsewhere.

Idle cost: each child blocks on its own BLPOP (up to JOBS_WORKER_IDLE_WAIT, 1 s) with a claim
behind it, so an idle pool of N children sends N of those pairs a second where a parent waiting
for all of them sent one (by arithmetic, not measured: about 11 commands a second per extra child
on the three queues).
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import mmap
import os
import select
import selectors
import signal
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from core.platform import keys, tracing
from core.platform.connection import new_redis
from core.queue import lifecycle, lua_scripts, task_metrics
from core.queue.lifecycle import AttemptResult, ClaimedJob
from core.worker.executors import (
    GROUP_COMMIT_MAX,
    GROUP_COMMIT_WINDOW,
    HARD_KILL_GRACE,
    REDIS_ERRORS,
    _connect_now,
    _die_with_parent,
    _kill,
    _load_libc,
    _reap,
    _reaped,
    _rss_mb,
    _watch_parent,
    _write_all,
    attempt,
    finish_retrying,
    record_stall,
    rss_kb,
)
from core.worker.prefetch import AdaptivePrefetch

if TYPE_CHECKING:
    from core.worker.loop import Worker

logger = logging.getLogger(__name__)

# fields of a child's shared page (doubles): the parent's stop flag, the index (in claim order) of
# the job running now or -1, when it began (CLOCK_MONOTONIC is system-wide), how many have begun
STOP, RUNNING, BEGUN_AT, BEGUN = 0, 1, 2, 3
START_AFTER = GROUP_COMMIT_WINDOW  # s: a job claimed ahead running this long gets its start written by the parent
RING_OFFSET = 128  # the fields, then the ring's two counters at 64, then the ring
RING_SIZE = 1 << 20  # bytes: about 4,000 claimed jobs' fields (a claim of JOBS_WORKER_PREFETCH at most)
RING_POLL = 0.005  # s: how often the parent reads the rings while a child works
RSS_CHECK_EVERY = 32  # jobs shorter than 1 ms between two checks of the child's memory at most
METRICS_FLUSH = 1.0  # s: a busy child flushes its task timings this often (and when it goes idle)
# the fields of a claimed job the parent keeps (not its arguments: it never runs it)
WIRE_FIELDS = ("job_id", "claim", "queue", "task_name", "timeout", "max_retries", "retries", "manual_retries",
               "user_id", "result_ttl", "failure_ttl", "priority", "created_at", "held", "deferrals",
               "retry_policy", "group", "ahead")


class _Shared:
    """Memory shared by the parent and a child: the fields STOP, RUNNING, BEGUN_AT, BEGUN, and a
    ring of the child's messages (what it claimed and ended). A message costs the child a memory
    copy and the parent nothing until it reads the ring (every RING_POLL while the child works, at
    each heartbeat, and when the child exits): no pipe write and no wake-up of the parent per job,
    which cost an idle enqueue->run 0.4 ms on 2 busy cores."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, RING_OFFSET + RING_SIZE)
        self.v = (ctypes.c_double * 4).from_buffer(self._map)
        self.v[RUNNING] = -1.0
        self.ends = (ctypes.c_uint64 * 2).from_buffer(self._map, 64)  # bytes written, bytes read

    def put(self, data: bytes, parent: int) -> None:
        """The child appends whole messages; a full ring waits for the parent to read it."""
        size = len(data)
        while self.ends[0] - self.ends[1] + size > RING_SIZE:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.001)
        head = self.ends[0]
        pos = head % RING_SIZE
        first = min(size, RING_SIZE - pos)
        self._map[RING_OFFSET + pos:RING_OFFSET + pos + first] = data[:first]
        if first < size:
            self._map[RING_OFFSET:RING_OFFSET + size - first] = data[first:]
        self.ends[0] = head + size  # after the bytes: the parent never reads a message half written

    def take(self) -> bytes:
        """The parent reads what the child wrote since the last call."""
        head, tail = self.ends[0], self.ends[1]
        if head == tail:
            return b""
        pos, size = tail % RING_SIZE, head - tail
        first = min(size, RING_SIZE - pos)
        data = self._map[RING_OFFSET + pos:RING_OFFSET + pos + first]
        if first < size:
            data += self._map[RING_OFFSET:RING_OFFSET + size - first]
        self.ends[1] = head
        return data

    def pending(self) -> bool:
        return self.ends[0] != self.ends[1]


class _DirectChild:
    def __init__(self, pid: int, ctl_fd: int, msg_file: Any, shared: _Shared) -> None:
        self.pid = pid
        self.ctl_fd = ctl_fd
        self.msg_file = msg_file
        self.shared = shared
        self.jobs: deque[ClaimedJob] = deque()  # claimed, not ended yet, in claim order
        self.base = 0  # claim index of jobs[0]
        self.partial = b""
        self.timed_out = False
        self.retiring = False
        self.idle = False  # its last claim found nothing (a burst worker ends when every child is idle)

    def running(self) -> ClaimedJob | None:
        index = int(self.shared.v[RUNNING]) - self.base
        return self.jobs[index] if 0 <= index < len(self.jobs) else None


class DirectPreforkExecutor:
    """``size`` reused child processes, each claiming, running and recording its own jobs."""

    claims_itself = True
    kind = "prefork"

    def __init__(self, worker: Worker, size: int, max_jobs: int, max_rss_mb: int) -> None:
        self.worker = worker
        self.size = size
        self.max_jobs = max_jobs
        self.max_rss_mb = max_rss_mb
        self._children: dict[int, _DirectChild] = {}
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._exiting: list[int] = []
        self._start_written: set[str] = set()  # jobs claimed ahead whose start this process wrote
        self._starts_retry_at = 0.0  # Redis refused the last try: the next one after this
        self._lock = threading.RLock()  # the heartbeat thread's stops read the children's jobs

    # --- children --------------------------------------------------------------------------------
    def start(self) -> None:
        lua_scripts.warm(self.worker.connection)  # before the first fork: no child hashes a script
        _load_libc()
        gc.freeze()
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        ctl_r, ctl_w = os.pipe()
        msg_r, msg_w = os.pipe()
        shared = _Shared()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ctl_w)
                os.close(msg_r)
                for child in self._children.values():  # siblings' pipes: else EOF is never seen
                    os.close(child.ctl_fd)
                    child.msg_file.close()
                _ChildLoop(parent, ctl_r, msg_w, shared, self.worker, self.max_jobs, self.max_rss_mb).main()
            except BaseException:
                logger.exception("work-horse crashed")
            finally:
                os._exit(0)
        os.close(ctl_r)
        os.close(msg_w)
        child = _DirectChild(pid, ctl_w, os.fdopen(msg_r, "rb", buffering=0), shared)
        self._children[pid] = child
        self._selector.register(child.msg_file, selectors.EVENT_READ, child)

    def _top_up(self) -> None:
        for _ in range(self.size - sum(1 for c in self._children.values() if not c.retiring)):
            self._spawn()

    # --- what the worker loop calls --------------------------------------------------------------
    def poll(self, timeout: float) -> None:
        """Read the children's messages and notice dead ones; block up to ``timeout`` for the first."""
        if self._exiting:
            self._exiting = [pid for pid in self._exiting if not _reaped(pid)]
        if any(c.shared.v[RUNNING] >= 0 or c.shared.pending() for c in self._children.values()):
            timeout = min(timeout, RING_POLL)
        for key, _events in self._selector.select(self._starts_due(timeout)):
            child: _DirectChild = key.data
            data = child.msg_file.read(65536)
            if not data:
                self._child_gone(child)
                continue
            *messages, child.partial = (child.partial + data).split(b"\n")
            for message in messages:
                self._handle(child, message)
        self.sync()
        self._enforce_timeouts()
        self._write_starts()

    def sync(self) -> None:
        """Read every child's ring (the main loop, and the heartbeat before it extends leases)."""
        for child in list(self._children.values()):
            self._drain(child)

    def _drain(self, child: _DirectChild) -> None:
        with self._lock:
            data = child.shared.take()
            if data:
                for message in data.split(b"\n")[:-1]:
                    self._handle(child, message)

    def _starts_due(self, timeout: float) -> float:
        """``timeout``, or less when a child's job claimed ahead will have run START_AFTER soon."""
        now = time.monotonic()
        if now < self._starts_retry_at:
            return timeout
        for child in self._children.values():
            job = child.running()
            if job is not None and job.ahead and job.member not in self._start_written:
                timeout = min(timeout, max(0.0, child.shared.v[BEGUN_AT] + START_AFTER - now))
        return timeout

    def _write_starts(self) -> None:
        """A child writes the start of a job claimed ahead with its end (one call for both). One
        that runs longer than START_AFTER gets its start written here, so it shows as running and a
        crash under it counts as a stall (abandon.lua skips a job never begun); finish.lua writes a
        start once, whoever sends it first."""
        now, due = time.monotonic(), []
        if now < self._starts_retry_at:
            return
        for child in self._children.values():
            job = child.running()
            if job is None or not job.ahead or job.member in self._start_written:
                continue
            begun_at = child.shared.v[BEGUN_AT]
            if now - begun_at >= START_AFTER:
                due.append((job, time.time() - (now - begun_at)))
        if not due:
            return
        try:
            lifecycle.finish_many(self.worker.connection, [], self.worker.name, starts=due)
        except REDIS_ERRORS as exc:
            logger.warning("could not record the start of %d job(s) (%s); retrying in a second", len(due), exc)
            self._starts_retry_at = now + 1.0
            return
        self._start_written.update(job.member for job, _at in due)

    def _handle(self, child: _DirectChild, message: bytes) -> None:
        kind, body = message[:1], message[1:]
        if kind == b"E":
            self._ended(child, int(body))
        elif kind == b"C":
            self._claimed(child, body)
        elif kind == b"I":
            child.idle = True
        elif kind == b"W":
            self.worker.promote_soon(float(body))
        elif kind == b"r":  # it reached its job or memory limit: a fresh child now, off the job path
            child.retiring = True
            if not self._stopping:
                self._top_up()

    def _claimed(self, child: _DirectChild, body: bytes) -> None:
        queues = self.worker.queues
        jobs = []
        for fields in json.loads(body):
            data = dict(zip(WIRE_FIELDS, fields))
            data["queue"] = queues[data["queue"]]
            jobs.append(ClaimedJob(kwargs={}, **data))
        child.idle = False
        child.jobs.extend(jobs)
        self.worker.adopt(jobs)

    def _ended(self, child: _DirectChild, count: int) -> None:
        with self._lock:
            done = [child.jobs.popleft() for _ in range(min(count, len(child.jobs)))]
            child.base += len(done)
        if self._start_written:
            self._start_written.difference_update(job.member for job in done)
        for job in done:
            self.worker.job_done(job)

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for child in list(self._children.values()):
            job = child.running()
            if job is None or not job.timeout or child.timed_out:
                continue
            if now - child.shared.v[BEGUN_AT] > job.timeout + HARD_KILL_GRACE:
                logger.error("work-horse %s ignored the %ss timeout of job %s; killing it", child.pid, job.timeout,
                             job.job_id)
                child.timed_out = True
                _kill(child.pid)

    def _child_gone(self, child: _DirectChild) -> None:
        """A child exited (retired, stopped) or died: what it held and had not ended is settled here."""
        self._children.pop(child.pid, None)
        try:
            self._selector.unregister(child.msg_file)
        except (KeyError, ValueError):
            pass
        status = _reap(child.pid)
        self._drain(child)
        try:
            os.close(child.ctl_fd)
        except OSError:
            pass
        child.msg_file.close()
        with self._lock:
            left = list(child.jobs)
            child.jobs.clear()
            running = int(child.shared.v[RUNNING])
            begun = int(child.shared.v[BEGUN])
        if left:
            self._settle(child, left, running, begun, status)
        if not self._stopping and not child.retiring:
            self._top_up()

    def _settle(self, child: _DirectChild, left: list[ClaimedJob], running: int, begun: int, status: str) -> None:
        connection = self.worker.connection
        never_begun = [job for i, job in enumerate(left, start=child.base) if i >= begun]
        ran = [(i, job) for i, job in enumerate(left, start=child.base) if i < begun]
        reason = f"work-horse {child.pid} died ({status}) while running the job"
        for index, job in ran:
            self._write_start(job, child)
            if index == running and job.interrupted:  # the shutdown deadline: back to its queue
                logger.error("job %s: %s", job.job_id, reason)
                finish_retrying(connection, [(job, AttemptResult(ok=False, error=reason))], self.worker.name)
            elif index == running and (job.stop_reason is not None or child.timed_out):
                logger.error("job %s: %s", job.job_id, reason)
                lost = AttemptResult(ok=False, error=reason,
                                     duration=time.monotonic() - child.shared.v[BEGUN_AT])
                finish_retrying(connection, [(job, lost)], self.worker.name)
            else:  # killed under it, or it ended and the child died before recording it: a stall
                logger.error("job %s: %s", job.job_id, reason)
                record_stall(connection, job, reason)
        if never_begun:
            try:
                lifecycle.release(connection, never_begun, f"its work-horse {child.pid} exited ({status}) before "
                                  f"starting it; requeued")
            except REDIS_ERRORS as exc:
                logger.warning("could not hand back %d job(s) (%s); the sweep will after their leases",
                               len(never_begun), exc)
        for job in left:
            self.worker.job_done(job)
            self._start_written.discard(job.member)

    def _write_start(self, job: ClaimedJob, child: _DirectChild) -> None:
        """A job claimed ahead whose start the dead child had not written yet: write it now, so the
        lost attempt counts as one (abandon.lua skips a job never begun)."""
        if not job.ahead:
            return
        connection = self.worker.connection
        try:
            if connection.hget(keys.job(job.job_id), "fk_claimed") != b"1":
                return
            began = time.time() - (time.monotonic() - child.shared.v[BEGUN_AT])
            lifecycle.finish_many(connection, [], self.worker.name, starts=[(job, began)])
        except REDIS_ERRORS as exc:
            logger.warning("job %s: could not record its start (%s)", job.job_id, exc)

    def idle(self) -> bool:
        """Every child found nothing at its last claim and holds nothing (a burst worker's end)."""
        return all(c.idle and not c.jobs for c in self._children.values())

    def busy(self) -> int:
        return sum(1 for c in self._children.values() if c.jobs)

    def children_rss_kb(self) -> int:
        return sum(rss_kb(pid) for pid in list(self._children))

    def stop_job(self, job: ClaimedJob) -> None:
        """Kill the child running ``job`` (the parent records it as stopped). A job claimed ahead and
        not begun runs, and its end is recorded as stopped (finish.lua reads the stop)."""
        with self._lock:
            for child in list(self._children.values()):
                running = child.running()
                if running is not None and running.member == job.member:
                    running.stop_reason = job.stop_reason or running.stop_reason or "stopped"
                    _kill(child.pid)

    def interrupt_job(self, job: ClaimedJob) -> None:
        """The shutdown deadline passed: kill the child running ``job``; the parent requeues it. A job
        claimed ahead is handed back by its stopping child."""
        with self._lock:
            for child in list(self._children.values()):
                running = child.running()
                if running is not None and running.member == job.member:
                    running.interrupted = True
                    _kill(child.pid)

    def stop(self, wait: bool) -> None:
        """Warm stop: each child ends its job, records its ends, hands back what it claimed ahead,
        and exits; the deadline thread (core/worker/loop.py) interrupts what runs too long."""
        self._stopping = True
        for child in list(self._children.values()):
            child.shared.v[STOP] = 1.0
            try:
                os.write(child.ctl_fd, b"s")
            except OSError:
                pass
        while self._children:
            if not wait:
                self.kill()
                break
            self.poll(0.2)
        for pid in self._exiting:
            _reap(pid, block=True)
        self._exiting = []

    def kill(self) -> None:
        self._stopping = True
        for child in list(self._children.values()):
            _kill(child.pid)
        for child in list(self._children.values()):
            _reap(child.pid, block=True)
        self.sync()  # what they claimed: the worker hands it back (cold stop)
        for pid in self._exiting:
            _reap(pid, block=True)
        self._exiting = []


class _ChildLoop:
    """A work-horse's own loop: claim (with the previous ends), run, repeat; block on the wake-up
    tokens when there is nothing to do. It tells the parent what it claimed and ended."""

    def __init__(self, parent: int, ctl_fd: int, msg_fd: int, shared: _Shared, worker: Worker, max_jobs: int,
                 max_rss_mb: int) -> None:
        self.parent = parent
        self.ctl_fd = ctl_fd
        self.msg_fd = msg_fd
        self.v = shared.v
        self.shared = shared
        self.name = worker.name
        self.queues = worker.queues
        self.queue_index = {q: i for i, q in enumerate(worker.queues)}
        self.settings = worker.settings
        self.max_jobs = max_jobs
        self.max_rss_mb = max_rss_mb
        self.prefetch = AdaptivePrefetch(self.settings.worker_prefetch,
                                         self.settings.worker_prefetch_budget_ms / 1000)
        self.ready: deque[ClaimedJob] = deque()
        self.finished: list[tuple[ClaimedJob, AttemptResult]] = []
        self.starts: list[tuple[ClaimedJob, float]] = []
        self.ends_since = 0.0
        self.claimed_total = 0
        self.done = 0
        self.claims_empty = False
        self.token = uuid.uuid4().hex[:6]
        self.seq = 0
        self.connection: Any = None
        self.wait_conn: Any = None
        self.wait_sock: Any = None
        self.wait_conn_obj: Any = None
        self.wait_id: Any = None
        self.dirty = False
        self.last_flush = time.monotonic()

    # --- setup and the loop -------------------------------------------------------------------------
    def main(self) -> None:
        gc.freeze()
        _die_with_parent(self.parent)
        _watch_parent(self.parent)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent decides when we stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        task_metrics.reset_buffer()
        tracing.after_fork()
        self.connection = new_redis()
        _connect_now(self.connection)
        self.wait_conn = new_redis(socket_timeout=self.settings.worker_idle_wait + 10)
        self.run()

    def orphaned(self) -> bool:
        return os.getppid() != self.parent

    def stopping(self) -> bool:
        return self.v[STOP] != 0.0 or self.orphaned()

    def run(self) -> None:
        retiring = False
        while not self.stopping():
            try:
                if self.ready:
                    if self.retiring(self.run_one()):
                        retiring = True
                        break
                    if self.due():
                        self.commit(claim=bool(self.ready) or not self.claims_empty)
                elif self.claims_empty and not self.finished and not self.starts:
                    self.wait_and_claim()
                else:
                    self.commit()
            except REDIS_ERRORS as exc:
                self.redis_down(exc)
        if self.orphaned():
            os._exit(1)
        self.hand_back()
        if retiring:
            self.tell(b"r\n")

    def retiring(self, duration: float) -> bool:
        """The job limit, or the memory limit: checked after a job of 1 ms or more and every
        RSS_CHECK_EVERY jobs (getrusage measured 25 us, an eighth of a no-op's cost in a child)."""
        if self.done >= self.max_jobs:
            return True
        if not self.max_rss_mb or (duration < 0.001 and self.done % RSS_CHECK_EVERY):
            return False
        return _rss_mb() > self.max_rss_mb

    def due(self) -> bool:
        """Ends in hand are recorded once the claimed-ahead jobs run out, past GROUP_COMMIT_WINDOW,
        or at GROUP_COMMIT_MAX of them."""
        if not self.finished and not self.starts:
            return False
        return (not self.ready or len(self.finished) >= GROUP_COMMIT_MAX
                or time.monotonic() - self.ends_since >= GROUP_COMMIT_WINDOW)

    def run_one(self) -> float:
        """Run the next job claimed; returns how long it ran."""
        job = self.ready.popleft()
        if self.orphaned():  # never start a job without a parent
            os._exit(1)
        index = self.done
        self.v[BEGUN_AT] = time.monotonic()
        self.v[RUNNING] = float(index)
        self.v[BEGUN] = float(index + 1)
        if job.ahead:
            self.starts.append((job, time.time()))
        result = attempt(self.connection, job)
        self.v[RUNNING] = -1.0
        self.prefetch.ran(result.duration)
        if not self.finished:
            self.ends_since = time.monotonic()
        self.finished.append((job, result))
        self.done += 1
        self.dirty = True
        return result.duration

    def wants(self) -> tuple[int, int]:
        start = 0 if self.ready else 1
        ahead = self.prefetch.ahead()
        if not start and len(self.ready) > ahead // 2:
            return 0, 0
        want = start + max(0, ahead - len(self.ready))
        room = self.max_jobs - self.claimed_total if self.max_jobs else want
        want = max(0, min(want, room))
        return want, min(start, want)

    # --- Redis ------------------------------------------------------------------------------------
    def commit(self, claim: bool = True, releases: list[ClaimedJob] | None = None) -> None:
        """Record the ends and starts in hand (and hand back ``releases``) and claim the next jobs, in
        one script call (finish_claim); then tell the parent."""
        want, start = self.wants() if claim else (0, 0)
        args = None
        if want > 0:
            self.seq += 1
            args = lifecycle.claim_args(self.name, f"{self.token}{self.seq:x}.", self.queues, want,
                                        self.settings.worker_lease, start=start)
        finished, starts = self.finished, self.starts
        _outcomes, jobs = lifecycle.finish_and_claim(self.connection, finished, self.name, starts, args,
                                                     self.queues, start, releases)
        self.finished, self.starts = [], []
        ended = len(finished) + len(releases or [])
        message = b"E%d\n" % ended if ended else b""
        if want > 0:
            message += self.after_claim(jobs, want)
        if message:
            self.shared.put(message, self.parent)
        self.maybe_flush()

    def after_claim(self, jobs: lifecycle.ClaimBatch, want: int) -> bytes:
        """Take the claimed jobs; returns the parent's message about them (sent before any runs)."""
        self.claims_empty = not jobs
        self.prefetch.claimed(want, len(jobs))
        if jobs.due_in is not None:  # timely: through the pipe, which wakes the parent
            self.tell(b"W%.4f\n" % jobs.due_in)
        if not jobs:
            return b"I\n"
        self.claimed_total += len(jobs)
        self.ready.extend(jobs)
        index = self.queue_index
        wire = [[j.job_id, j.claim, index[j.queue], j.task_name, j.timeout, j.max_retries, j.retries, j.manual_retries,
                 j.user_id, j.result_ttl, j.failure_ttl, j.priority, j.created_at, j.held, j.deferrals,
                 j.retry_policy, j.group, j.ahead] for j in jobs]
        return b"C" + json.dumps(wire, separators=(",", ":")).encode() + b"\n"

    def tell(self, message: bytes) -> None:
        try:
            _write_all(self.msg_fd, message)
        except OSError:  # the parent is gone
            os._exit(1)

    def wait_and_claim(self) -> None:
        """Block on the wake-up tokens with the claim pipelined behind the pop (one round trip from
        an enqueue to a claimed job); a stop from the parent unblocks the pop (CLIENT UNBLOCK)."""
        if self.dirty:
            task_metrics.buffer().flush(self.connection)
            self.dirty, self.last_flush = False, time.monotonic()
        timeout = self.settings.worker_idle_wait
        want, start = self.wants()
        if want <= 0:
            self.claims_empty = False
            return
        self.seq += 1
        args = lifecycle.claim_args(self.name, f"{self.token}{self.seq:x}.", self.queues, want,
                                    self.settings.worker_lease, chain_wakeup=True, start=start, server_clock=True)
        claim = lua_scripts.evalsha_command("claim", self.connection, [], args)
        conn = self.blocking_connection()
        wake = [keys.wake(q) for q in self.queues]
        try:
            conn.send_packed_command(conn.pack_commands([("BLPOP", *wake, f"{timeout:.3f}"),
                                                         claim]))
            self.block(conn, timeout)
            conn.read_response()
            try:
                reply = conn.read_response()
            except NoScriptError:  # Redis restarted (scripts flushed): load it and claim now
                reply = lua_scripts.run("claim", self.connection, [], args)
        except BaseException:
            conn.disconnect()
            self.wait_sock = None
            raise
        self.shared.put(self.after_claim(lifecycle.parse_claim(reply, self.queues, start), want), self.parent)

    def blocking_connection(self) -> Any:
        """The connection of the blocking pop, and its client id (for CLIENT UNBLOCK at a stop),
        asked again after a reconnect."""
        if self.wait_sock is None:
            pool = self.wait_conn.connection_pool
            try:
                conn = pool.get_connection()
            except TypeError:  # redis-py 5 names the command
                conn = pool.get_connection("BLPOP")
            self.wait_conn_obj = conn
        conn = self.wait_conn_obj
        conn.connect()
        if conn._sock is not self.wait_sock:
            conn.send_command("CLIENT", "ID")
            self.wait_id = conn.read_response()
            self.wait_sock = conn._sock
        return conn

    def block(self, conn: Any, timeout: float) -> None:
        """Wait for the pop's reply; a stop meanwhile unblocks it (the claim behind it still runs,
        and what it claims is handed back)."""
        deadline = time.monotonic() + timeout + 1.0
        watched = [conn._sock, self.ctl_fd]
        while time.monotonic() < deadline:
            readable = select.select(watched, [], [], min(1.0, max(0.0, deadline - time.monotonic())))[0]
            if conn._sock in readable:
                return
            if self.ctl_fd in readable:
                if not os.read(self.ctl_fd, 64):
                    watched = [conn._sock]  # the parent closed it: the ppid check ends this child
                if self.wait_id is not None:
                    self.connection.execute_command("CLIENT", "UNBLOCK", self.wait_id)
            if self.orphaned():
                os._exit(1)

    def maybe_flush(self) -> None:
        if self.dirty and time.monotonic() - self.last_flush >= METRICS_FLUSH:
            task_metrics.buffer().flush(self.connection)
            self.dirty, self.last_flush = False, time.monotonic()

    def redis_down(self, exc: Exception) -> None:
        """Redis unreachable or refusing writes: keep the ends in hand and try again in a second."""
        logger.debug("work-horse %s: Redis error (%s); retrying in a second", os.getpid(), exc)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not self.stopping():
            time.sleep(0.05)

    def hand_back(self) -> None:
        """Stopping or retiring: record the ends in hand and hand back the jobs claimed ahead, in one
        script call; tried for 30 s while Redis is away (then the sweep takes them back)."""
        releases = list(self.ready)
        self.ready.clear()
        for _ in range(30):
            if not (self.finished or self.starts or releases):
                break
            try:
                self.commit(claim=False, releases=releases)
                releases = []
            except REDIS_ERRORS as exc:
                if self.orphaned():
                    os._exit(1)
                logger.warning("work-horse %s: could not record its ends at its exit (%s); retrying", os.getpid(),
                               exc)
                time.sleep(1.0)
        try:
            task_metrics.buffer().flush(self.connection)
        except REDIS_ERRORS:
            pass
