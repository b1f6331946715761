"""The fallback's durable spool: jobs accepted while Redis is unreachable, in SQLite on local disk.

One file per host (``JOBS_FALLBACK_SPOOL``, default ``var/fallback-spool.db``), shared by every
process: any gunicorn worker, the CLI and the dashboard read a spooled job from it, and the
process that runs a job claims it in a transaction with a lease, so each job runs in exactly one
process and a dead holder's jobs are taken over when its lease runs out.

Durability: WAL mode with ``synchronous=NORMAL``. A job is committed before ``enqueue_job``
returns, so a process crash (SIGKILL, OOM, a deploy) cannot lose it; a power cut or kernel
crash can lose the last commits not yet checkpointed to disk (``JOBS_FALLBACK_SYNC=full`` fsyncs
every commit instead, at about 2-5 ms per enqueue on this machine's disk).

Tables: ``jobs`` (one row per run, with its limits), ``payloads`` (each job's JSON arguments, kept
out of ``jobs``: see below), ``meta`` (the unfinished count) and ``limiters`` (rate limiters' state).

Under load (issue 21): SQLite rewrites a whole row on every UPDATE and walks a row's overflow pages
to read any column stored after a large one, so with the payload in ``jobs`` every claim, lease
renewal and end of a 60 KB job rewrote 60 KB, and every scan over finished rows (the prune after
each run, holding the write lock) read all their payloads: enqueues stalled for seconds as
finished rows piled up. The payload now lives in ``payloads`` (written once by the enqueue, read
by id, deleted with its row by a trigger), claims walk the ``(status, priority, run_at)`` index per
status instead of sorting every waiting row, and writers take turns (:mod:`core.fallback.turns`):
see docs/BENCHMARKS.md "The spool under load" for the numbers. Every SQL statement of the spool is in this module and in
:mod:`core.fallback.spool_limits` (the limits in a claim); :mod:`core.fallback.executor` runs and hands back.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import get_settings
from core.errors import QueueUnavailableError
from core.fallback import spool_groups, spool_limits, turns
from core.platform.keys import PRIORITIES
from core.queue.job_model import Job, JobStatus, policy_view
from core.queue.job_options import expired_reason

logger = logging.getLogger(__name__)

WAITING = ("pending", "delayed", "retrying")
LIVE = (*WAITING, "running", "handing")
FINAL = ("completed", "failed", "canceled", "expired")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    run_at REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,
    max_retries INTEGER NOT NULL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    timeout INTEGER,
    user_id TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    result TEXT,
    error TEXT,
    progress TEXT,
    owner TEXT,
    lease_until REAL,
    size INTEGER NOT NULL DEFAULT 0,
    limits TEXT,
    reason TEXT,
    deferrals INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    retry_policy TEXT,
    stalls INTEGER NOT NULL DEFAULT 0,
    grp TEXT NOT NULL DEFAULT '',
    gconc INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, priority, run_at);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_done ON jobs (completed_at);
CREATE TABLE IF NOT EXISTS payloads (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS jobs_payload_gone AFTER DELETE ON jobs BEGIN
    DELETE FROM payloads WHERE id = OLD.id;
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS limiters (name TEXT PRIMARY KEY, tat REAL NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('unfinished', 0);
"""
# The limit check reads a counter kept in the same transactions as the rows (a count(*) over the
# unfinished rows cost 0.15 ms per enqueue at a few thousand rows); recount() corrects any drift.
_COUNT = "UPDATE meta SET value = value + ? WHERE key = 'unfinished'"
# Due jobs one claim looks at, in order, for one its limits let start: more than any backlog of
# jobs held by one limiter that a fallback sees in practice, few enough to read in ~1 ms.
CLAIM_SCAN = 500
# Columns later releases added to ``jobs``: a spool file that lacks one gains it on open.
ADDED_COLUMNS = {"limits": "TEXT", "reason": "TEXT", "deferrals": "INTEGER NOT NULL DEFAULT 0", "expires_at": "REAL",
                 "retry_policy": "TEXT", "stalls": "INTEGER NOT NULL DEFAULT 0",
                 "grp": "TEXT NOT NULL DEFAULT ''", "gconc": "INTEGER"}


# A write transaction's BEGIN IMMEDIATE is retried by the spool itself (SQLite's busy handler backs
# off up to 100 ms between tries, so a steady writer in another process keeps winning): SQLite waits
# at most BUSY_MS per try, then the spool sleeps RETRY_SLEEP and asks again, until the writer's bound.
BUSY_MS = 20
READ_BUSY_MS = 10_000  # a read outside a write (rarely blocked in WAL mode: a WAL recovery) waits up to this
RETRY_SLEEP = 0.002  # s
WRITE_WAIT = 30.0  # s: the bound of a runner's or hand-back's write (an enqueue has JOBS_FALLBACK_ENQUEUE_WAIT)


class SpoolFullError(QueueUnavailableError):
    """The spool holds its limit of unfinished jobs, or the disk is full (HTTP 503)."""


class SpoolBusyError(QueueUnavailableError):
    """An enqueue did not get the spool's write lock within JOBS_FALLBACK_ENQUEUE_WAIT (HTTP 503)."""


def priority_rank(name: str) -> int:
    """A priority's rank in the spool's ``priority`` column (claimed in ascending order)."""
    return PRIORITIES.index(name) if name in PRIORITIES else PRIORITIES.index("normal")


def priority_name(rank: int) -> str:
    return PRIORITIES[rank] if 0 <= rank < len(PRIORITIES) else "normal"


@dataclass
class SpooledJob:
    """A row of the spool, as the runner and the hand-back need it."""

    id: str
    queue: str
    task: str
    payload: dict[str, Any]
    status: str
    run_at: float
    priority: int
    max_retries: int
    retry_count: int
    timeout: int | None
    user_id: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    result: str | None
    error: str | None
    progress: str | None
    owner: str | None
    lease_until: float | None
    limits: str | None = None  # fk_limits JSON (core.flow.limits.job_limits), enforced by core.fallback.spool_limits
    reason: str | None = None  # why a job waits: the limit holding it, or its Retry-After
    deferrals: int = 0  # Retry-After deferrals so far (they use no retry)
    expires_at: float | None = None  # epoch s: a claim after it ends the job 'expired' instead of running it
    retry_policy: str | None = None  # fk_retry JSON (core.queue.backoff); None: the task's policy
    stalls: int = 0  # attempts lost with the process that ran them (lease taken over): they use no retry
    group: str | None = None  # its job group (column grp, '' when none): claimed round-robin (spool_groups)
    group_concurrency: int | None = None  # column gconc: at most this many of its group's jobs run at once

    def to_job(self) -> Job:
        status = {"pending": JobStatus.PENDING, "delayed": JobStatus.DELAYED, "retrying": JobStatus.RETRYING,
                  "running": JobStatus.RUNNING, "handing": JobStatus.PENDING, "completed": JobStatus.COMPLETED,
                  "failed": JobStatus.FAILED, "canceled": JobStatus.CANCELED, "expired": JobStatus.EXPIRED}[self.status]
        held = self.reason if self.status in WAITING else None
        if held:  # as in Redis: a job a limit holds back shows as delayed, with the reason
            status = JobStatus.DELAYED
        return Job(
            job_id=self.id, queue=self.queue, task_name=self.task, status=status, payload=self.payload,
            result=json.loads(self.result) if self.result is not None and status == JobStatus.COMPLETED else None,
            error=self.error if status != JobStatus.COMPLETED else None, retry_count=self.retry_count,
            max_retries=self.max_retries, progress=json.loads(self.progress) if self.progress else None,
            user_id=self.user_id, created_at=self.created_at, started_at=self.started_at,
            completed_at=self.completed_at if status.is_final else None, mode="fallback",
            priority=priority_name(self.priority), reason=held, deferrals=self.deferrals,
            expires_at=self.expires_at,
            retry_policy=policy_view(self.retry_policy), stalls=self.stalls, group=self.group,
        )


_COLUMNS = ("id, queue, task, payload, status, run_at, priority, max_retries, retry_count, timeout, user_id, "
            "created_at, started_at, completed_at, result, error, progress, owner, lease_until, limits, reason, "
            "deferrals, expires_at, retry_policy, stalls, grp, gconc")


# reads join the payload back in: rows written before ``payloads`` existed keep theirs in ``jobs``
_READ = ("SELECT " + _COLUMNS.replace("id, ", "jobs.id, ", 1).replace("payload,", "coalesce(payloads.body, jobs.payload),", 1)
         + " FROM jobs LEFT JOIN payloads ON payloads.id = jobs.id")


def _row(values: tuple) -> SpooledJob:
    data = list(values)
    data[3] = json.loads(data[3])
    data[25] = data[25] or None  # grp: '' is ungrouped
    return SpooledJob(*data)


class Spool:
    """The spool file: one SQLite connection per thread, WAL, busy timeout."""

    def __init__(self, path: str | Path | None = None) -> None:
        settings = get_settings()
        self.path = Path(path or settings.fallback_spool)
        self._turns_key = str(self.path.resolve())
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()

    # --- connections ---------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None, check_same_thread=False)
            with self._ready_lock:
                if not self._ready:
                    self._prepare_file(db)
                    self._ready = True
            sync = "FULL" if get_settings().fallback_sync == "full" else "NORMAL"
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")  # reads; a write's wait is _begin's own loop
            # no checkpoint inside an enqueue's commit: the runner threads checkpoint in the
            # background (checkpoint()), so a web request never pays for one
            db.execute("PRAGMA wal_autocheckpoint=0")
            self._local.db = db
        return db

    def _prepare_file(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL and create the schema, one process at a time.

        Two processes opening a new spool at once both hold a shared lock and both want the
        exclusive one the switch to WAL needs; SQLite answers one of them "database is locked" at
        once, without waiting out the busy timeout, since waiting could deadlock (3 processes
        opening a new file together failed in 59 of 200 rounds). An advisory lock on a file beside
        the spool puts them in line; WAL mode then stays with the file, so later connections skip
        this.
        """
        with open(f"{self.path}.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
                for column, kind in ADDED_COLUMNS.items():  # a spool file written by an earlier release
                    if column not in columns:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
                db.executescript(spool_groups.SCHEMA)  # after the columns: its index is on grp
                spool_groups.heal(db)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def exists(self) -> bool:
        return self.path.exists()

    def _write(self, work: Any, wait: float = WRITE_WAIT) -> Any:
        """Run ``work(db)`` in one IMMEDIATE transaction, in this process's turn for the file.

        Waits at most ``wait`` s in all (the turn, then SQLite's lock) and raises
        :class:`SpoolBusyError` past it; a disk that is full raises :class:`SpoolFullError`."""
        deadline = time.monotonic() + wait
        lock = turns.lock_for(self._turns_key)
        if not lock.acquire(timeout=wait):
            raise self._busy(wait, "the other threads of this process writing to it")
        try:
            db = self._db()
            self._begin(db, deadline, wait)
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise SpoolFullError(f"the fallback spool at {self.path} cannot grow: the disk is full ({exc}); "
                                     f"Redis is unreachable, so the job was not accepted") from exc
            raise
        finally:
            lock.release()

    def _begin(self, db: sqlite3.Connection, deadline: float, wait: float) -> None:
        """BEGIN IMMEDIATE, retried every few ms while another process holds the write lock."""
        db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        try:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise self._busy(wait, "other processes writing to it") from exc
                time.sleep(RETRY_SLEEP)
        finally:
            db.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")

    def _busy(self, wait: float, holder: str) -> SpoolBusyError:
        return SpoolBusyError(f"the fallback spool at {self.path} stayed busy for {wait:g}s ({holder})")

    # --- writing -------------------------------------------------------------------------------
    def add(self, job: Job, run_at: float, priority: int, timeout: int | None, limit: int,
            limits: str | None = None, retry_policy: str | None = None, group: str | None = None,
            group_concurrency: int | None = None) -> str:
        """Spool a new run; a live job with the same id makes it a no-op (returns the id).
        ``limits``: the job's ``fk_limits`` (:mod:`core.fallback.spool_limits`); ``retry_policy``:
        its ``fk_retry``; ``group`` and ``group_concurrency``: its job group (:mod:`core.fallback.spool_groups`)."""
        payload = json.dumps(job.payload, separators=(",", ":"))
        wait = get_settings().fallback_enqueue_wait

        def work(db: sqlite3.Connection) -> str:
            current = db.execute("SELECT status FROM jobs WHERE id = ?", (job.job_id,)).fetchone()
            if current is not None and current[0] in LIVE:
                return job.job_id
            waiting = db.execute("SELECT value FROM meta WHERE key = 'unfinished'").fetchone()[0]
            if waiting >= limit:
                raise SpoolFullError(
                    f"Redis is unreachable and the fallback spool already holds {waiting} unfinished jobs "
                    f"(JOBS_FALLBACK_MAX_PENDING={limit}); try again when Redis is back")
            db.execute("DELETE FROM jobs WHERE id = ?", (job.job_id,))  # its payload goes with it (trigger)
            db.execute(_COUNT, (1,))
            db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, '', ?, ?, ?, ?, 0, ?, ?, ?, NULL, NULL, NULL, NULL, "
                f"NULL, NULL, NULL, ?, NULL, 0, ?, ?, 0, ?, ?)",
                (job.job_id, job.queue, job.task_name, "delayed" if run_at > time.time() else "pending",
                 run_at, priority, job.max_retries, timeout, job.user_id, job.created_at or time.time(), limits,
                 job.expires_at, retry_policy, group or "", group_concurrency),
            )
            spool_groups.join(db, job.queue, priority, group or "")
            db.execute("INSERT OR REPLACE INTO payloads (id, body) VALUES (?, ?)", (job.job_id, payload))
            return job.job_id

        try:
            return self._write(work, wait)
        except SpoolBusyError as exc:
            raise SpoolBusyError(f"Redis is unreachable and {exc}, so the job was not accepted; try again in a "
                                 f"moment (JOBS_FALLBACK_ENQUEUE_WAIT={wait:g} bounds this wait)") from exc
        except QueueUnavailableError:
            raise
        except sqlite3.Error as exc:  # never a raw sqlite3 error to a web handler: a 503 naming it
            raise QueueUnavailableError(f"Redis is unreachable and the fallback spool at {self.path} could not "
                                        f"take the job ({type(exc).__name__}: {exc}); try again in a moment") from exc

    def claim(self, owner: str, lease: float,
              queue_limit: Callable[[str], str] = lambda _queue: "") -> tuple[SpooledJob | None, bool]:
        """Take the next due job (or one whose holder's lease ran out) that its limits let start.
        Returns (job, abandoned). ``queue_limit(queue)``: that queue's rate limit entry, or ''.

        Groups take turns (:mod:`core.fallback.spool_groups`): priority first, then the group
        whose turn it is, then that group's oldest job, so one tenant's backlog does not hold the
        others back; a group at its ``group_concurrency`` is passed. A job held back by a limit
        stays waiting and the next one is looked at, so other tasks are not held up behind it; a
        limiter found blocking is not asked again in the same claim. A job whose ``expires_at``
        has passed is ended ``expired`` instead (before its limits are asked), as claim.lua does
        in Redis, and the next one is looked at. At most ``CLAIM_SCAN`` jobs and
        ``GROUP_SCAN`` groups are looked at per claim."""
        now = time.time()

        def work(db: sqlite3.Connection) -> tuple[SpooledJob | None, bool]:
            blocked: dict[str, str] = {}  # limiter name -> the label shown on the jobs it holds
            expired: list[tuple[str, str, str, float]] = []  # ended after the scan (not under its cursor)
            abandoned, running, live = spool_groups.running_rows(db, now)
            idle: list[tuple[str, int, str]] = []
            budget, found, lowest, turn = CLAIM_SCAN, None, {}, None
            turns = spool_groups.rotation(db)
            for queue, priority, group, vtime in turns:
                lowest.setdefault(priority, vtime)
                taken_over = abandoned.get((queue, priority, group), [])
                waiting = db.execute(spool_groups.DUE, (group, queue, priority, budget))  # read lazily
                first = waiting.fetchone()
                if first is None and not taken_over and (queue, priority, group) not in live:
                    idle.append((queue, priority, group))
                    continue
                for job_id, _queue, raw_limits, expires_at, task, run_at, gconc in itertools.chain(
                        taken_over, [first] if first else [], waiting):
                    if run_at > now:
                        break  # the rest of the group waits for its time
                    budget -= 1
                    if expires_at is not None and expires_at <= now:
                        expired.append((job_id, queue, task, expires_at))
                        continue
                    if spool_groups.over_limit(gconc, running.get((queue, group), 0)):
                        break  # the group is at its group_concurrency: the next group's turn
                    limits = spool_limits.entries(raw_limits, queue_limit(queue))
                    if limits:
                        held = next((blocked[e["n"]] for e in limits if e["n"] in blocked), None)
                        if held is None and (stopper := spool_limits.take(db, limits, now)) is not None:
                            held = blocked[stopper["n"]] = str(stopper.get("l") or stopper["n"])
                        if held is not None:
                            db.execute("UPDATE jobs SET reason = ? WHERE id = ? AND reason IS NOT ?",
                                       (held, job_id, held))
                            if budget <= 0:
                                break
                            continue
                    found, turn = job_id, (queue, priority, group, vtime, lowest[priority])
                    break
                waiting.close()
                if found is not None or budget <= 0:
                    break
            turns.close()
            if turn is not None:
                spool_groups.served(db, *turn)
            for job_id, queue, task, expires_at in expired:
                self._expire(db, job_id, queue, task, expires_at, now)
            spool_groups.leave(db, idle)
            if found is None:
                return None, False
            job = _row(db.execute(f"{_READ} WHERE jobs.id = ?", (found,)).fetchone())
            return self._start(db, job, owner, now, lease)

        return self._write(work)

    @staticmethod
    def _expire(db: sqlite3.Connection, job_id: str, queue: str, task: str, expires_at: float, now: float) -> None:
        db.execute("UPDATE jobs SET status = 'expired', completed_at = ?, error = ?, reason = NULL, owner = NULL, "
                   "lease_until = NULL WHERE id = ?", (now, expired_reason(expires_at), job_id))
        db.execute(_COUNT, (-1,))
        logger.warning("job %s task=%s queue=%s outcome=expired mode=fallback: not started before its expires, "
                       "never ran", job_id, task, queue)

    @staticmethod
    def _start(db: sqlite3.Connection, job: SpooledJob, owner: str, now: float,
               lease: float) -> tuple[SpooledJob, bool]:
        # a job whose holder died mid-attempt: that attempt is a stall (DESIGN.md "Crashes are
        # stalls"), not a retry. A row being handed back is never run here: its hand-back may
        # already have reached Redis.
        abandoned = job.status == "running"
        if abandoned:
            job.stalls += 1
        db.execute("UPDATE jobs SET status = 'running', owner = ?, lease_until = ?, started_at = ?, "
                   "stalls = ?, reason = NULL WHERE id = ?", (owner, now + lease, now, job.stalls, job.id))
        job.status, job.owner, job.started_at, job.reason = "running", owner, now, None
        return job, abandoned

    def renew(self, owner: str, lease: float) -> None:
        self._write(lambda db: db.execute(
            "UPDATE jobs SET lease_until = ? WHERE owner = ? AND status IN ('running', 'handing')",
            (time.time() + lease, owner)))

    def end(self, job_id: str, owner: str, status: str, result: str | None, error: str | None,
            retry_count: int | None = None, run_at: float | None = None, deferrals: int | None = None,
            reason: str | None = None, wait: float = WRITE_WAIT) -> bool:
        """Record an attempt's end, only while ``owner`` still holds the job. True if written.

        ``status`` ``retrying`` (a retry) or ``delayed`` (a Retry-After deferral) waits until
        ``run_at``; ``completed``, ``failed`` and ``canceled`` are final."""
        now = time.time()
        size = len(result or "") + len(error or "")
        if status in WAITING:
            sql = ("UPDATE jobs SET status = ?, error = ?, retry_count = coalesce(?, retry_count), run_at = ?, "
                   "deferrals = coalesce(?, deferrals), reason = ?, owner = NULL, lease_until = NULL "
                   "WHERE id = ? AND owner = ? AND status = 'running'")
            args: tuple = (status, error, retry_count, run_at, deferrals, reason, job_id, owner)
        else:
            sql = ("UPDATE jobs SET status = ?, result = ?, error = ?, completed_at = ?, size = ?, owner = NULL, "
                   "lease_until = NULL WHERE id = ? AND owner = ? AND status = 'running'")
            args = (status, result, error, now, size, job_id, owner)

        def work(db: sqlite3.Connection) -> bool:
            written = db.execute(sql, args).rowcount == 1
            if written and status in FINAL:
                db.execute(_COUNT, (-1,))
            return written

        return self._write(work, wait)

    def set_progress(self, job_id: str, value: Any, owner: str | None = None) -> bool:
        """Write a job's progress; with ``owner``, only while that process still holds the job (a
        stale attempt, whose lease another process took over, writes nothing). True if written."""
        if owner is None:
            return self._write(lambda db: db.execute("UPDATE jobs SET progress = ? WHERE id = ?",
                                                     (json.dumps(value), job_id)).rowcount == 1)
        return self._write(lambda db: db.execute(
            "UPDATE jobs SET progress = ? WHERE id = ? AND owner = ? AND status = 'running'",
            (json.dumps(value), job_id, owner)).rowcount == 1)

    def cancel(self, job_id: str, reason: str = "canceled") -> tuple[SpooledJob | None, bool]:
        """Cancel a waiting job, recording ``reason``: (the row after the attempt or None if unknown,
        whether this call canceled it)."""
        def work(db: sqlite3.Connection) -> tuple[SpooledJob | None, bool]:
            changed = db.execute(f"UPDATE jobs SET status = 'canceled', completed_at = ?, error = ?, reason = NULL "
                                 f"WHERE id = ? AND status IN {WAITING}", (time.time(), reason, job_id)).rowcount
            db.execute(_COUNT, (-changed,))
            found = db.execute(f"{_READ} WHERE jobs.id = ?", (job_id,)).fetchone()
            return (_row(found) if found else None), changed == 1

        return self._write(work)

    # --- hand-back -----------------------------------------------------------------------------
    def take_for_handback(self, owner: str, lease: float, limit: int = 100) -> list[SpooledJob]:
        """Claim waiting jobs (and ones whose holder died) to move to Redis; marks them 'handing'.

        Rows already 'handing' under ``owner`` are taken again: they are what an earlier hand-back
        of this process left when Redis failed between the take and the delete (the caller holds
        the process's hand-back lock, so no other hand-back here has them). Without this they sat
        'handing' for as long as the process lived, since its lease renewal kept them (found by the
        fault campaign: 2 of 1,440 jobs never ran). Redis accepts each id once, so taking them
        again cannot run a job twice."""
        now = time.time()

        def work(db: sqlite3.Connection) -> list[SpooledJob]:
            rows = [_row(r) for r in db.execute(
                f"{_READ} WHERE jobs.id IN (SELECT id FROM jobs WHERE status IN {WAITING} "
                f"OR (status IN ('running', 'handing') AND lease_until < ?) OR (status = 'handing' AND owner = ?) "
                f"ORDER BY priority, run_at LIMIT ?) ORDER BY priority, run_at",
                (now, owner, limit)).fetchall()]
            for row in rows:
                if row.status == "running":  # its holder died mid-attempt: a stall, not a retry
                    row.stalls += 1
                db.execute("UPDATE jobs SET status = 'handing', owner = ?, lease_until = ?, stalls = ? "
                           "WHERE id = ?", (owner, now + lease, row.stalls, row.id))
            return rows

        return self._write(work)

    def finished(self, limit: int = 200) -> list[SpooledJob]:
        rows = self._db().execute(f"{_READ} WHERE status IN {FINAL} LIMIT ?", (limit,))
        return [_row(r) for r in rows.fetchall()]

    def delete(self, ids: list[str], owner: str | None = None) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        if owner is None:
            self._write(lambda db: db.execute(f"DELETE FROM jobs WHERE id IN ({marks}) AND status IN {FINAL}", ids))
        else:
            def work(db: sqlite3.Connection) -> None:
                removed = db.execute(f"DELETE FROM jobs WHERE id IN ({marks}) AND owner = ? AND status IN {LIVE}",
                                     (*ids, owner)).rowcount
                db.execute(_COUNT, (-removed,))

            self._write(work)

    def prune(self, keep: int, keep_bytes: int) -> int:
        """Forget the oldest finished jobs beyond ``keep`` rows or ``keep_bytes`` of results and errors."""
        def work(db: sqlite3.Connection) -> int:
            removed = db.execute(
                f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN {FINAL} "
                f"ORDER BY completed_at DESC LIMIT -1 OFFSET ?)", (keep,)).rowcount
            total = db.execute(f"SELECT coalesce(sum(size), 0) FROM jobs WHERE status IN {FINAL}").fetchone()[0]
            while total > keep_bytes:
                oldest = db.execute(f"SELECT id, size FROM jobs WHERE status IN {FINAL} "
                                    f"ORDER BY completed_at LIMIT 100").fetchall()
                if not oldest:
                    break
                for job_id, size in oldest:
                    db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                    removed += 1
                    total -= size
                    if total <= keep_bytes:
                        break
            return removed

        return self._write(work)

    def recount(self) -> None:
        """Set the unfinished counter from the rows (runs now and then; corrects any drift), and
        drop rate limiters that no longer hold anything back."""
        def work(db: sqlite3.Connection) -> None:
            db.execute(f"UPDATE meta SET value = (SELECT count(*) FROM jobs WHERE status IN {LIVE}) "
                       f"WHERE key = 'unfinished'")
            spool_limits.forget_idle(db, time.time())

        self._write(work)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file without blocking writers (PASSIVE)."""
        self._db().execute("PRAGMA wal_checkpoint(PASSIVE)")

    # --- reading -------------------------------------------------------------------------------
    def get(self, job_id: str) -> SpooledJob | None:
        found = self._db().execute(f"{_READ} WHERE jobs.id = ?", (job_id,)).fetchone()
        return _row(found) if found else None

    def for_user(self, user_id: str, limit: int) -> list[SpooledJob]:
        rows = self._db().execute(f"{_READ} WHERE user_id = ? ORDER BY created_at DESC LIMIT ?", (user_id, limit))
        return [_row(r) for r in rows.fetchall()]

    def unfinished(self) -> tuple[int, float | None]:
        """How many jobs are not finished, and the oldest one's age in seconds."""
        count, oldest = self._db().execute(
            f"SELECT count(*), min(created_at) FROM jobs WHERE status IN {LIVE}").fetchone()
        return int(count), (time.time() - oldest) if oldest is not None else None
