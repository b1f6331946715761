"""The Fikiri worker: claims jobs atomically, runs them in an executor, keeps their leases alive.

One loop per worker process::

    promote due delayed jobs (every JOBS_WORKER_PROMOTE_INTERVAL)
    sweep: take back jobs whose lease expired (every JOBS_WORKER_MAINTENANCE_INTERVAL, one worker),
           and check the periodic scheduler's heartbeat (2 commands; core/schedule/heartbeat.py)
    claim up to <free slots> jobs from the queues in priority order (one script call)
    hand them to the executor, or, with nothing to do, block on the queues' wake-up tokens

The default (prefork) pool's children each run that loop for themselves (core/worker/direct.py):
this process only supervises them (leases, timeouts, stops, restarts) and maintains the queues.
The simple class (and a prefork pool with ``JOBS_WORKER_PREFORK_CLAIMS=parent``) hand their jobs'
ends back to this loop, which records
a batch of ends, the starts of jobs claimed ahead and the next claim in one script call
(``finish_claim``; group commit of up to 2 ms or 16 ends while the children are fed from the
jobs claimed ahead), with adaptive, bounded prefetch (core/worker/prefetch.py). Measured on 8,000
pre-enqueued no-ops (default worker, 2026-12-07): 0.14 round trips and 11.75 Redis commands per
job. An idle worker sends its claim pipelined behind the BLPOP on the wake-up tokens, so Redis
runs it as soon as an enqueue's token arrives: the job comes back in that same round trip.

A claimed job sits in its queue's in-flight registry with a lease; a heartbeat thread extends
every lease in one pipeline per ``JOBS_WORKER_HEARTBEAT_INTERVAL``. When a worker dies, its
leases run out and the sweep of any other worker takes the jobs back, counting the lost
attempt as a stall (:func:`core.queue.lifecycle.abandon_expired`). Recovery bound: lease
(``JOBS_WORKER_HEARTBEAT_INTERVAL`` + ``JOBS_WORKER_HEARTBEAT_GRACE``, 1 + 6 s) + one maintenance
interval (2 s) = 9 s; the arithmetic is in core/config.py.

Idle cost, measured over 20 s on the three queues (default worker, 2026-12-07): 59 Redis
commands/s in 21 round trips/s — the promote script twice a second per queue, the limiter release
twice a second, a claim (9 LPOPs on the three priority lists of three queues, inside the script)
and a BLPOP per wake-up, the heartbeat pipeline every second, the sweep every 2 s, the webhook
dispatcher's EXISTS every 2 s (measured before the claim was pipelined behind the BLPOP).

Redis unreachable: a long-running worker retries every second, as systemd expects, and logs which
Redis and for how long once a minute; a ``--burst`` worker gives up after
``JOBS_WORKER_BURST_REDIS_TIMEOUT`` (30 s) and exits 1 naming the Redis and the last error
(a CI step or cron job must not hang on a Redis that is not there).

Signals: SIGTERM/SIGINT stop claiming and give the jobs in hand ``JOBS_WORKER_SHUTDOWN_TIMEOUT``
(25 s) to finish; then the ones still running are interrupted (a work-horse is killed, a job in a
thread gets :func:`~core.execution.stopping.should_stop` and, ``SHUTDOWN_GRACE`` later, JobStopped)
and requeued at the head of their queues without using a retry or a stall, and the worker exits 0.
A task declared ``interruptible=False`` is waited for until it ends (or systemd's TimeoutStopSec
SIGKILLs it: a stall). A job in a thread still blocked in C after the grace is not requeued under
its running code: its lease is yielded (it goes back after the lease, uncounted) and the worker
exits 0. A second signal puts the jobs in hand back at once and exits 1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

from redis.exceptions import NoScriptError

from core.config import Settings, get_settings
from core.platform import keys, tracing
from core.platform.connection import REDIS_DOWN, REDIS_REFUSING, new_redis, redis_description
from core.queue import lifecycle, lua_scripts, task_metrics, task_registry
from core.queue.lifecycle import ClaimedJob
from core.worker.executors import (
    SHUTDOWN_GRACE,
    PreforkExecutor,
    SimpleExecutor,
    ThreadedExecutor,
    finish_retrying,
    rss_kb,
)

logger = logging.getLogger(__name__)

WORKER_CLASSES = ("prefork", "fork", "simple", "threaded", "async")
# "Redis is down" (core.platform.connection holds the one rule) or refusing writes for a while (OOM,
# READONLY): the worker waits and retries through both; neither is a crash
REDIS_ERRORS = (*REDIS_DOWN, *REDIS_REFUSING)
DOWN_LOG_EVERY = 60.0  # s: while Redis stays unreachable, one log line per minute


def _get_connection(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py 5 names the command
        return pool.get_connection("BLPOP")


class RedisUnreachableError(RuntimeError):
    """A --burst worker could not reach Redis for JOBS_WORKER_BURST_REDIS_TIMEOUT seconds."""


def build_executor(worker: Worker, kind: str, concurrency: int | None, settings: Settings,
                   parent_claims: bool = False) -> Any:
    """The executor of worker class ``kind``. ``parent_claims``: a prefork pool whose parent claims
    for its children (--max-jobs counts claims in one place; JOBS_WORKER_PREFORK_CLAIMS=parent)."""
    if kind == "simple":
        return SimpleExecutor(worker, settings.worker_prefetch)
    if kind == "threaded":
        return ThreadedExecutor(worker, concurrency or settings.worker_concurrency)
    if kind == "fork":
        return PreforkExecutor(worker, concurrency or 1, max_jobs=1, max_rss_mb=0, kind="fork",
                               prefetch=settings.worker_prefetch)
    if kind == "prefork":
        size = concurrency or settings.worker_pool_size or os.cpu_count() or 2
        if settings.worker_prefork_claims == "child" and not parent_claims:
            from core.worker.direct import DirectPreforkExecutor

            return DirectPreforkExecutor(worker, size, settings.worker_max_jobs_per_child,
                                         settings.worker_max_child_memory_mb)
        return PreforkExecutor(worker, size, settings.worker_max_jobs_per_child, settings.worker_max_child_memory_mb,
                               prefetch=settings.worker_prefetch)
    if kind == "async":
        from core.worker.async_executor import AsyncExecutor  # its own module: asyncio only for this class

        return AsyncExecutor(worker, concurrency or settings.worker_async_concurrency, settings.worker_concurrency)
    raise ValueError(f"unknown worker class {kind!r}; accepted: {', '.join(WORKER_CLASSES)}")


class Worker:
    """A worker process serving ``queues`` (full names, in priority order)."""

    def __init__(self, queues: list[str], worker_class: str | None = None, concurrency: int | None = None,
                 name: str | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.queues = queues
        self.kind = worker_class or self.settings.worker_class
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self._token = uuid.uuid4().hex[:6]
        self._seq = 0
        self.connection = new_redis()
        self._wait_connection = new_redis(socket_timeout=self.settings.worker_idle_wait + 10)
        self._concurrency = concurrency
        self.executor = build_executor(self, self.kind, concurrency, self.settings)
        self._in_flight: dict[str, ClaimedJob] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()  # set when the worker has shut down: the deadline watch ends
        self._signals = 0
        self.processed = 0
        self._next_promote = 0.0
        self._next_sweep = 0.0
        self._woken = False
        self._claims_empty = False  # the last claim found nothing: the next turn waits on the tokens
        self._max_jobs: int | None = None
        self._dispatcher: Any = None
        self._burst = False
        self._down_since: float | None = None  # monotonic start of the current outage
        self._down_logged = 0.0
        self._beat_error_logged = -DOWN_LOG_EVERY  # the first unexpected heartbeat error is logged at once

    # --- bookkeeping the executors call ------------------------------------------------------------
    def job_done(self, job: ClaimedJob) -> None:
        with self._lock:
            self._in_flight.pop(job.member, None)

    def adopt(self, jobs: list[ClaimedJob]) -> None:
        """Jobs a prefork child claimed for itself: their leases are kept alive here (heartbeat)."""
        with self._lock:
            for job in jobs:
                self._in_flight[job.member] = job
        self.processed += len(jobs)

    def promote_soon(self, due_in: float) -> None:
        """A claim saw a parked job's slot coming in ``due_in`` s: release it on time."""
        self._next_promote = min(self._next_promote, time.monotonic() + max(0.002, due_in))

    def in_hand(self) -> list[ClaimedJob]:
        sync = getattr(self.executor, "sync", None)
        if sync is not None:  # a prefork child's claims and ends, read from its shared memory now
            sync()
        with self._lock:
            return list(self._in_flight.values())

    # --- the loop ------------------------------------------------------------------------------------
    def work(self, burst: bool = False, max_jobs: int | None = None) -> int:
        """Serve until stopped (or, with ``burst``, until the queues are empty). Returns the exit code:
        0, or 1 when a burst worker gave up on an unreachable Redis."""
        self._burst = burst
        self._max_jobs = max_jobs
        if max_jobs is not None and getattr(self.executor, "claims_itself", False):
            # --max-jobs counts claims: one claimer (the parent) counts them exactly
            self.executor = build_executor(self, self.kind, self._concurrency, self.settings, parent_claims=True)
        self._install_signals()
        if tracing.init_sentry():
            logger.info("worker %s reports task failures to Sentry", self.name)
        self.executor.start()
        try:
            self._register()
        except RedisUnreachableError as exc:
            logger.error("%s", exc)
            self.executor.stop(wait=True)
            self._stop.set()
            return 1
        beat = threading.Thread(target=self._heartbeat_loop, name="fikiri-heartbeat", daemon=True)
        beat.start()
        from core.events.webhooks import start_dispatcher  # here, not at the top: after JOBS_TASK_MODULES is checked

        self._dispatcher = start_dispatcher(self.name)  # lifecycle events -> webhook delivery jobs
        logger.info("worker %s (%s) serving %s", self.name, self.executor.kind, ", ".join(self.queues))
        code = 0
        try:
            while not self._stop.is_set():
                if max_jobs is not None and self.processed >= max_jobs:
                    break
                if not self._step(burst, max_jobs):
                    break
        except RedisUnreachableError as exc:
            logger.error("%s", exc)
            code = 1
        finally:
            self._shutdown()
        return code

    def _step(self, burst: bool, max_jobs: int | None) -> bool:
        """One turn of the loop; False when a burst worker has nothing left to do."""
        if getattr(self.executor, "claims_itself", False):
            return self._step_supervising(burst)
        if getattr(self.executor, "hands_back", False):
            return self._step_batched(burst, max_jobs)
        try:
            self._maintain()
            free = self.executor.free_slots()
            if free <= 0:
                self.executor.wait(1.0)
                return True
            if max_jobs is not None:
                free = min(free, max_jobs - self.processed)
            jobs = self._claim(free)
        except REDIS_ERRORS as exc:
            self._redis_down(exc)
            return True
        self._redis_back()
        if jobs:
            self.processed += len(jobs)
            self.executor.submit_many(jobs)
            return True
        if burst:
            if not self.executor.busy() and not self.in_hand():
                return False
            self.executor.wait(0.05)
            return True
        self._wait_for_work()
        return True

    def _step_supervising(self, burst: bool) -> bool:
        """One turn for a pool whose children claim and record for themselves: maintenance, then the
        children's messages (what they claimed and ended, dead ones) until the next maintenance."""
        try:
            self._maintain()
        except REDIS_ERRORS as exc:
            self._redis_down(exc)
            return True
        self._redis_back()
        due = min(self._next_promote, self._next_sweep) - time.monotonic()
        self.executor.poll(max(0.0, min(0.5, due)))
        return not (burst and self.executor.idle() and not self.in_hand())

    def _step_batched(self, burst: bool, max_jobs: int | None) -> bool:
        """One turn for an executor that hands its jobs' ends back (prefork, fork, simple): record
        them, and the starts of jobs claimed ahead, in the same script call as the next claim
        (finish_claim: one round trip per batch). With nothing to do, block on the wake-up tokens
        with the claim pipelined behind the pop (one round trip from an enqueue to a claimed job)."""
        ex = self.executor
        try:
            self._maintain()
            ex.poll(0)
            want, start = self._wants()
            slots = start > 0
            if self._stop.is_set():
                want = start = 0
            due_in = ex.ends_due_in()  # group commit: ends wait for company up to GROUP_COMMIT_WINDOW
            if want > 0 and self._claims_empty and due_in > 0:
                want = start = 0  # the last claim found nothing: wait on the wake-up tokens instead
            idle_next = want == 0 and (slots or not ex.busy())
            if want > 0 or due_in <= 0 or (idle_next and due_in < float("inf")):
                finished, starts = ex.take()
                jobs = self._commit(finished, starts, want, start)
                if jobs:
                    self.processed += len(jobs)
                    ex.submit_many(jobs)
                    return True
        except REDIS_ERRORS as exc:
            self._redis_down(exc)
            return True
        self._redis_back()
        if burst:
            if not ex.busy():
                return False
            ex.wait(min(0.05, due_in))
            return True
        if slots or not ex.busy():
            self._wait_for_work()  # the wake-up tokens, the children's answers handled meanwhile
        else:
            ex.wait(min(1.0, due_in))  # every slot busy: a child's answer comes back, or the ends fall due
        return True

    def _wants(self) -> tuple[int, int]:
        """The executor's (jobs to claim, how many begin now); with --max-jobs nothing is claimed
        ahead (a job claimed ahead counts, and would be handed back at the exit instead of run)."""
        want, start = self.executor.want()
        if self._max_jobs is not None:
            want = start = min(start, max(0, self._max_jobs - self.processed))
        return want, start

    def _commit(self, finished: list[tuple[ClaimedJob, Any]], starts: list[tuple[ClaimedJob, float]], want: int,
                start: int, releases: list[ClaimedJob] | None = None) -> list[ClaimedJob]:
        """Record ``finished`` and ``starts`` (and hand back ``releases``) and claim up to ``want``
        jobs, ``start`` of them beginning now, in one script call; returns the jobs claimed."""
        ex = self.executor
        interrupted = [pair for pair in finished if pair[0].interrupted]
        if interrupted:  # a shutdown's deadline: back to their queues, no retry, no stall
            finish_retrying(self.connection, interrupted, self.name)
            for job, _attempt in interrupted:
                self.job_done(job)
            finished = [pair for pair in finished if not pair[0].interrupted]
        args = None
        if want > 0:
            self._seq += 1
            args = lifecycle.claim_args(self.name, f"{self._token}{self._seq:x}.", self.queues, want,
                                        self.settings.worker_lease, chain_wakeup=self._woken, start=start)
        try:
            _outcomes, jobs = lifecycle.finish_and_claim(self.connection, finished, self.name, starts, args,
                                                         self.queues, start, releases)
        except REDIS_ERRORS:
            ex.give_back(finished, starts)
            raise
        for job, _attempt in finished:
            self.job_done(job)
        for job in releases or []:
            self.job_done(job)
        if want > 0:
            self._after_claim(jobs, want)
        return jobs

    def _after_claim(self, jobs: lifecycle.ClaimBatch, asked: int) -> None:
        self._woken = False
        self._claims_empty = not jobs
        self.executor.claimed(asked, len(jobs))
        if jobs.due_in is not None:  # a parked job's slot: release it on time
            self._next_promote = min(self._next_promote, time.monotonic() + max(0.002, jobs.due_in))
        with self._lock:
            for job in jobs:
                self._in_flight[job.member] = job

    def _wait_and_claim(self, timeout: float) -> None:
        """Block on the wake-up tokens with a claim pipelined behind the pop: Redis runs the claim as
        soon as the pop returns (an enqueue's token, or the timeout), so the jobs come back in the
        same round trip from the enqueue. The claim takes its lease and started_at from Redis' clock
        then. Meanwhile the children's answers are handled and their ends recorded (on the other
        connection), so a worker with one busy child and one idle still wakes on an enqueue."""
        ex = self.executor
        want, start = self._wants()
        wake = [keys.wake(q) for q in self.queues]
        if want <= 0:
            self._woken = self._wait_connection.blpop(wake, timeout=timeout) is not None
            self._claims_empty = False
            return
        self._seq += 1
        args = lifecycle.claim_args(self.name, f"{self._token}{self._seq:x}.", self.queues, want,
                                    self.settings.worker_lease, chain_wakeup=True, start=start, server_clock=True)
        claim = lua_scripts.evalsha_command("claim", self.connection, [], args)
        pool = self._wait_connection.connection_pool
        conn = _get_connection(pool)
        try:
            conn.send_packed_command(conn.pack_commands([("BLPOP", *wake, f"{timeout:.3f}"),
                                                         claim]))
            while not ex.wait_readable(conn._sock, timeout + 1.0):
                finished, starts = ex.take()
                if finished or starts:
                    self._commit(finished, starts, 0, 0)
            conn.read_response()
            try:
                reply = conn.read_response()
            except NoScriptError:  # Redis restarted (scripts flushed): load it and claim now
                reply = lua_scripts.run("claim", self.connection, [], args)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        jobs = lifecycle.parse_claim(reply, self.queues, start)
        self._after_claim(jobs, want)
        if jobs:
            self.processed += len(jobs)
            ex.submit_many(jobs)

    def _drain(self) -> None:
        """A stopping worker whose executor hands ends back: wait for the jobs running, record their
        ends, and hand back the jobs claimed ahead in the same script call as the last ends."""
        ex = self.executor
        releases = ex.take_buffered()
        tries = 0
        while True:
            ex.poll(0.2 if ex.busy() else 0)
            finished, starts = ex.take()
            last = not ex.busy()
            if finished or starts or (last and releases):
                try:
                    self._commit(finished, starts, 0, 0, releases if last else None)
                    if last:
                        releases = []
                except REDIS_ERRORS as exc:
                    tries += 1
                    if tries > 30:
                        logger.error("worker %s: could not record %d end(s) at shutdown (%s); the sweep will take "
                                     "the jobs back", self.name, len(finished), exc)
                        return
                    time.sleep(1.0)
                    continue
            if last and not releases:
                return

    def _claim(self, limit: int) -> list[ClaimedJob]:
        self._seq += 1
        jobs = lifecycle.claim(self.connection, self.name, f"{self._token}{self._seq:x}.", self.queues, limit,
                               self.settings.worker_lease, chain_wakeup=self._woken)
        self._woken = False
        if jobs.due_in is not None:  # a parked job's slot: release it on time
            self._next_promote = min(self._next_promote, time.monotonic() + max(0.002, jobs.due_in))
        with self._lock:
            for job in jobs:
                self._in_flight[job.member] = job
        return jobs

    def _wait_for_work(self) -> None:
        """Block until a wake-up token arrives (an enqueue) or the next maintenance is due.

        Going idle is also when this process's task timings are flushed, so a quiet system shows
        them at once; under load they are flushed with each heartbeat."""
        task_metrics.buffer().flush(self.connection)
        timeout = max(0.002, min(self.settings.worker_idle_wait, self._next_promote - time.monotonic()))
        try:
            if getattr(self.executor, "hands_back", False):
                self._wait_and_claim(timeout)
            else:
                self._woken = self._wait_connection.blpop([keys.wake(q) for q in self.queues],
                                                          timeout=timeout) is not None
        except REDIS_ERRORS as exc:
            self._redis_down(exc)

    def _redis_down(self, exc: Exception) -> None:
        """Wait a second and let the caller retry; a burst worker gives up after its bound."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since, self._down_logged = now, now
            state = "refuses writes" if isinstance(exc, REDIS_REFUSING) else "unreachable"
            logger.warning("worker %s: Redis at %s %s (%s: %s); retrying every second", self.name,
                           redis_description(self.settings), state, type(exc).__name__, exc)
        down_for = now - self._down_since
        if self._burst and down_for >= self.settings.worker_burst_redis_timeout:
            raise RedisUnreachableError(
                f"worker {self.name}: Redis at {redis_description(self.settings)} unreachable for {down_for:.0f}s "
                f"(JOBS_WORKER_BURST_REDIS_TIMEOUT={self.settings.worker_burst_redis_timeout:g}); a --burst worker "
                f"gives up. Last error: {exc}")
        if now - self._down_logged >= DOWN_LOG_EVERY:
            self._down_logged = now
            logger.warning("worker %s: Redis at %s still unreachable after %.0fs (%s); retrying every second",
                           self.name, redis_description(self.settings), down_for, exc)
        self._stop.wait(1.0)

    def _redis_back(self) -> None:
        if self._down_since is not None:
            logger.info("worker %s: Redis at %s reachable again after %.0fs", self.name,
                        redis_description(self.settings), time.monotonic() - self._down_since)
            self._down_since = None

    # --- maintenance ----------------------------------------------------------------------------------
    def _maintain(self) -> None:
        now = time.monotonic()
        if now >= self._next_promote:
            wait = self.settings.worker_promote_interval
            for queue in self.queues:
                lifecycle.promote_due(self.connection, queue)
            _released, due_in = lifecycle.release_limits(self.connection)
            if due_in is not None:  # a parked job's slot comes sooner: be there on time
                wait = min(wait, max(0.002, due_in))
            self._next_promote = now + wait
        if now >= self._next_sweep:
            self._next_sweep = now + self.settings.worker_maintenance_interval
            self.sweep()

    def sweep(self) -> None:
        """Take back abandoned jobs and drop expired registry entries (one worker per queue at a time)."""
        # the lock lapses a little before this worker's next turn, so one live worker alone still
        # sweeps every interval (an exact ttl could lapse just after it and skip a turn: 2x late)
        ttl_ms = max(100, int(self.settings.worker_maintenance_interval * 1000) - 200)
        swept = False
        for queue in self.queues:
            if not self.connection.set(keys.maintenance_lock(queue), self.name, nx=True, px=ttl_ms):
                continue
            swept = True
            lifecycle.abandon_expired(self.connection, queue)
            lifecycle.expire_registries(self.connection, queue)
            self._clean_worker_registry(queue)
        self._hand_back_spool()
        if swept:
            self._watch_scheduler()

    def _watch_scheduler(self) -> None:
        """A dead periodic scheduler enqueues no check of itself: when it has gone silent and no
        alert went out yet, enqueue the check that alerts (one job id per incident)."""
        from core.schedule import heartbeat

        incident = heartbeat.silent_incident(self.connection)
        if incident is None:
            return
        from core.api.queues import email_queue

        try:
            email_queue.enqueue_job("check_scheduler_liveness", {}, job_id=f"check-{incident}")
        except REDIS_ERRORS:
            raise
        except Exception:
            logger.exception("could not enqueue the scheduler liveness check")

    def _hand_back_spool(self) -> None:
        """Move jobs the web processes on this host spooled while Redis was down into Redis."""
        from core.fallback.executor import get_fallback

        try:
            get_fallback().hand_back(self.connection)
        except REDIS_ERRORS:
            raise
        except Exception:
            logger.exception("could not hand back the fallback spool")

    def _clean_worker_registry(self, queue: str) -> None:
        members = [m.decode() for m in self.connection.smembers(keys.queue_workers(queue))]
        if not members:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(keys.worker(keys.worker_name(member)))
            alive = pipe.execute()
        dead = [m for m, ok in zip(members, alive) if not ok]
        if dead:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.srem(keys.queue_workers(queue), *dead)
                pipe.srem(keys.workers(), *dead)
                pipe.execute()

    # --- registration and heartbeat ----------------------------------------------------------------------
    def _register(self) -> None:
        while True:
            try:
                with self.connection.pipeline(transaction=False) as pipe:
                    pipe.hset(keys.worker(self.name), mapping={
                        "birth": lifecycle.epoch_to_rq_time(time.time()), "hostname": socket.gethostname(),
                        "pid": os.getpid(), "queues": ",".join(self.queues), "state": "busy",
                        "worker_class": self.executor.kind,
                    })
                    pipe.expire(keys.worker(self.name), self.settings.worker_ttl)
                    pipe.sadd(keys.workers(), keys.worker(self.name))  # RQ's tools read keys there
                    for queue in self.queues:
                        pipe.sadd(keys.queue_workers(queue), keys.worker(self.name))
                        pipe.sadd(keys.all_queues(), keys.queue(queue))
                    pipe.execute()
                return
            except REDIS_ERRORS as exc:
                if self._stop.is_set():
                    return
                self._redis_down(exc)

    def _unregister(self) -> None:
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.delete(keys.worker(self.name))
                pipe.srem(keys.workers(), keys.worker(self.name), self.name)  # a bare name: an older version's
                for queue in self.queues:
                    pipe.srem(keys.queue_workers(queue), keys.worker(self.name), self.name)
                pipe.execute()
        except REDIS_ERRORS as exc:
            logger.warning("worker %s could not unregister (%s); the sweep will", self.name, exc)

    def _heartbeat_loop(self) -> None:
        connection = new_redis()
        interval = self.settings.worker_heartbeat_interval
        while not self._stop.wait(interval):
            self._beat(connection)
        # keep leases alive while a warm stop waits for the jobs in hand
        while self.in_hand():
            self._beat(connection)
            time.sleep(interval)

    def _beat(self, connection: Any) -> None:
        """One heartbeat that never ends the thread: a heartbeat thread that died left the worker
        running jobs whose leases nobody renewed, so the sweep took them back and they ran twice
        (a NOSCRIPT after a reshard did that). Unexpected errors are logged with their traceback,
        once a minute while they repeat."""
        try:
            self.heartbeat(connection)
        except Exception:
            now = time.monotonic()
            if now - self._beat_error_logged >= DOWN_LOG_EVERY:
                self._beat_error_logged = now
                logger.exception("heartbeat of worker %s failed unexpectedly; trying again in %ss",
                                 self.name, self.settings.worker_heartbeat_interval)

    def heartbeat(self, connection: Any) -> None:
        """Extend every lease in hand and this worker's registration (one pipeline), flush metrics."""
        jobs = self.in_hand()
        expiry = time.time() + self.settings.worker_lease
        try:
            with connection.pipeline(transaction=False) as pipe:
                leased = lifecycle.extend_leases(pipe, jobs, expiry)  # fenced: a stale member is never re-added
                pipe.hset(keys.worker(self.name), mapping={
                    "last_heartbeat": lifecycle.epoch_to_rq_time(time.time()), "state": "busy" if jobs else "idle",
                    "current_jobs": len(jobs), "current_job_ids": ",".join(j.job_id for j in jobs[:20]),
                    "processed": self.processed, "rss_kb": rss_kb() + self.executor.children_rss_kb()})
                pipe.expire(keys.worker(self.name), self.settings.worker_ttl)
                pipe.lpop(keys.stop_requests(self.name), 100)
                replies = pipe.execute()
                stops = replies[-1]
            self._drop_stale(jobs, [m for reply in replies[:len(leased)] for m in reply])
            if any(job.held for job in jobs):
                lifecycle.extend_permits(connection, jobs, self.settings.worker_lease)
            if stops:
                self._stop_jobs(connection, [s.decode() for s in stops])
            task_metrics.buffer().flush(connection)
        except REDIS_ERRORS as exc:
            logger.warning("heartbeat of worker %s failed (%s)", self.name, exc)

    def _drop_stale(self, jobs: list[ClaimedJob], stale: list[bytes]) -> None:
        """Attempts whose lease the sweep already took back (this worker was stopped or starved past
        its lease): the job may run elsewhere now, so stop this run; its finish is fenced anyway."""
        if not stale:
            return
        gone = {m.decode() if isinstance(m, bytes) else m for m in stale}
        # after an outage this worker's own sweep may take an attempt back and this worker claim the
        # job again at once: executors stop by job id, so stopping the stale attempt would stop the
        # new one (it ended "canceled"). The stale one's end is fenced: let it end by itself.
        held = {job.member for job in self.in_hand()}  # not one that ended meanwhile (a prefork child records its own)
        current = {job.job_id for job in jobs if job.member not in gone}
        for job in jobs:
            if job.member not in gone or job.member not in held:
                continue
            if job.job_id in current:
                logger.warning("worker %s: job %s attempt %s lost its lease, and the job runs here again as a newer "
                               "attempt; the stale one is left to end, its end will not be written",
                               self.name, job.job_id, job.claim)
            else:
                logger.warning("worker %s: job %s attempt %s lost its lease (the sweep took it back); stopping this "
                               "stale run, its end will not be written", self.name, job.job_id, job.claim)
                job.stop_reason = "stale attempt: its lease was lost and the job taken back"
                self.executor.stop_job(job)

    def _stop_jobs(self, connection: Any, job_ids: list[str]) -> None:
        """Someone asked to stop these running jobs (core.api.jobs.stop_job): end them here."""
        by_id = {job.job_id: job for job in self.in_hand()}
        for job_id in job_ids:
            job = by_id.get(job_id)
            if job is None:
                continue  # it ended meanwhile (or runs elsewhere after a takeover): nothing to stop
            reason = connection.hget(keys.job(job_id), "fk_stop")
            job.stop_reason = reason.decode() if reason else "stopped"
            logger.warning("worker %s: stopping job %s (%s)", self.name, job_id, job.stop_reason)
            self.executor.stop_job(job)

    # --- stopping ---------------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info("worker %s: %s received; finishing %d job(s) in hand, then exiting (send it again to "
                        "stop at once)", self.name, signal.Signals(signum).name, len(self.in_hand()))
            self._stop.set()
            threading.Thread(target=self._shutdown_deadline, name="fikiri-shutdown-deadline", daemon=True).start()
            return
        self._cold_stop()

    def _shutdown_deadline(self) -> None:
        """JOBS_WORKER_SHUTDOWN_TIMEOUT after the first signal: interrupt and requeue what still runs."""
        timeout = self.settings.worker_shutdown_timeout
        if self._stopped.wait(timeout):
            return
        reason = (f"interrupted: its worker's shutdown deadline passed (JOBS_WORKER_SHUTDOWN_TIMEOUT={timeout:g}s); "
                  f"requeued without using a retry or a stall")
        waited = []
        interrupt = getattr(self.executor, "interrupt_job", None)  # an executor without it: wait for its jobs
        for job in self.in_hand():
            spec = task_registry.get(job.queue_short, job.task_name)
            if interrupt is None or (spec is not None and not spec.interruptible):
                waited.append(job.job_id)
                continue
            job.requeue_reason = reason
            interrupt(job)
        logger.warning("worker %s: shutdown deadline of %gs passed; interrupting and requeueing the jobs still in "
                       "hand%s", self.name, timeout,
                       f", waiting for {len(waited)} not interruptible: {', '.join(waited[:10])}" if waited else "")
        while not self._stopped.wait(SHUTDOWN_GRACE + 0.5):
            held = self.in_hand()
            if held and all(job.requeue_reason is not None for job in held):
                self._exit_yielding(held)

    def _exit_yielding(self, jobs: list[ClaimedJob]) -> None:
        """Jobs interrupted at the deadline that still have not returned (blocked in C, in a thread):
        yield their leases (requeued after the lease, not a stall, never while their code may still
        run here) and exit 0 now."""
        logger.warning("worker %s: %d interrupted job(s) did not return (%s); yielding their leases and exiting",
                       self.name, len(jobs), ", ".join(j.job_id for j in jobs[:10]))
        try:
            lifecycle.yield_leases(self.connection, jobs)
        except REDIS_ERRORS as exc:
            logger.error("could not yield %d lease(s) (%s); the sweep will count them as stalls", len(jobs), exc)
        self._unregister()
        logging.shutdown()
        os._exit(0)

    def _cold_stop(self) -> None:
        """Second signal: stop the jobs in hand, put them back at the head of their queues, exit 1."""
        self.executor.kill()  # first: what a prefork child claimed until it died is in hand then
        jobs = self.in_hand()
        try:
            lifecycle.release(self.connection, jobs, "interrupted: its worker was stopped at once; requeued")
        except REDIS_ERRORS as exc:
            logger.error("cold stop could not requeue %d job(s) (%s); the sweep will retry them", len(jobs), exc)
        self._unregister()
        logging.shutdown()
        os._exit(1)

    def _shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()
        if getattr(self.executor, "hands_back", False):
            self._drain()
        self.executor.stop(wait=True)
        self._stop.set()  # a burst or max-jobs end too: the heartbeat thread ends with the worker
        try:
            task_metrics.buffer().flush(self.connection)
        except REDIS_ERRORS:
            pass
        self._unregister()
        self._stopped.set()
        logger.info("worker %s stopped after %d job(s)", self.name, self.processed)
