"""Job groups in the fallback spool: the claim serves groups round-robin while Redis is down.

Redis serves one queue and priority's groups in a rotation (``core/queue/lua/groups_lib.lua``);
without it, a tenant's 500 spooled jobs would again sit in front of everyone else's, since the
spool's claim was FIFO by priority and run time. This module keeps the same rule over the spool:

* **The rotation** is the ``job_groups`` table: one row per (queue, priority, group) with live jobs,
  holding a virtual time. The claim walks it by priority, then virtual time, and takes the first
  group's oldest job its limits let start; the served group's virtual time becomes the
  priority's lowest plus 1, so equal groups take turns and a high job of any group still runs
  before any normal one. A joining group starts at its priority's lowest (no credit for idle
  time). Ungrouped jobs (``grp = ''``) are one member per queue, as in Redis.
* **A group's oldest job** is one indexed read (the partial index ``jobs_group_due`` over waiting
  rows only: finished rows kept for status reads never slow it down).
* **group_concurrency** (the job's ``gconc``) counts the group's running rows with a live lease
  that carry it, across every process using the spool (one read of the running rows per
  claim); a group at its limit is skipped, not parked at the head. A dead holder's rows stop
  counting when their lease runs out, as its permits do in Redis.
* **Idle groups leave**: a group with no waiting and no running row is removed by the claim that
  finds it so. A row returning to waiting (a retry, a deferral) was live all along, so its group
  is still there; :func:`heal` adds any missing one (a spool file from an earlier release) when a
  process first opens the file.

Not in the spool, for lack of Redis: the weights (``set_group_weight``) and the paused groups
(``pause_group``) live in Redis and one spool serves one host, so while Redis is down every
group has weight 1 and a paused group's spooled jobs run. Both apply again from the hand-back
on, which gives Redis each job's group and ``group_concurrency``.

Measured (a claim-then-end loop over a fresh spool file, this machine, SQLite WAL, 2 shared cores
at load ~2): a claim's median is 0.07 ms with 1 group of 505, groups of 500 and 5, or 100 groups of
10 waiting; the FIFO claim before groups took 0.20-0.34 ms in the same run (its OR over two row kinds,
ordered, sorted every due row; the group's partial index gives its oldest job in order). The worst
case is every group passed: with 1,000 groups all at their ``group_concurrency``, a claim that finds
nothing takes 3.7-5.5 ms (one indexed read per group, and the 1,000 running rows read once).
"""

from __future__ import annotations

import sqlite3
from typing import Any

WAITING = ("pending", "delayed", "retrying")  # as core.fallback.spool.WAITING (which imports this module)
# Groups looked at per claim, at most: more than the tenants a host's spool serves in an outage, and
# bounded so a claim stays a short transaction even if thousands of groups are all at their limits.
GROUP_SCAN = 1000

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS job_groups (
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    grp TEXT NOT NULL,
    vtime REAL NOT NULL,
    PRIMARY KEY (queue, priority, grp)
);
CREATE INDEX IF NOT EXISTS groups_turn ON job_groups (priority, vtime, queue, grp);
CREATE INDEX IF NOT EXISTS jobs_group_due ON jobs (grp, queue, priority, run_at) WHERE status IN {WAITING};
"""
# The group's waiting rows, oldest run time first (the partial index answers it in order).
DUE = (f"SELECT id, queue, limits, expires_at, task, run_at, gconc FROM jobs WHERE grp = ? AND queue = ? "
       f"AND priority = ? AND status IN {WAITING} ORDER BY run_at LIMIT ?")


def join(db: sqlite3.Connection, queue: str, priority: int, group: str) -> None:
    """Put the group in its priority's rotation (if not there) at the lowest virtual time."""
    db.execute("INSERT OR IGNORE INTO job_groups (queue, priority, grp, vtime) VALUES "
               "(?, ?, ?, (SELECT coalesce(min(vtime), 0) FROM job_groups WHERE priority = ?))",
               (queue, priority, group, priority))


def heal(db: sqlite3.Connection) -> int:
    """Give every group with waiting or running rows its rotation row (an earlier release's file,
    or drift); returns how many were added."""
    return db.execute("INSERT OR IGNORE INTO job_groups (queue, priority, grp, vtime) "
                      "SELECT DISTINCT queue, priority, grp, (SELECT coalesce(min(vtime), 0) FROM job_groups AS g "
                      "WHERE g.priority = jobs.priority) FROM jobs "
                      "WHERE status IN ('pending', 'delayed', 'retrying', 'running')").rowcount


def rotation(db: sqlite3.Connection) -> sqlite3.Cursor:
    """The groups in claim order, read lazily along ``groups_turn`` (a claim usually needs the first):
    rows of (queue, priority, group, virtual time). Close it before changing ``job_groups``."""
    return db.execute("SELECT queue, priority, grp, vtime FROM job_groups ORDER BY priority, vtime, queue, grp "
                      "LIMIT ?", (GROUP_SCAN,))


def running_rows(db: sqlite3.Connection, now: float) -> tuple[dict[tuple[str, int, str], list[tuple]],
                                                               dict[tuple[str, str], int], set[tuple[str, int, str]]]:
    """One read of the running rows: (the abandoned ones per group, as claim candidates; each
    (queue, group)'s running count under ``group_concurrency``; the groups with any running row)."""
    abandoned: dict[tuple[str, int, str], list[tuple]] = {}
    counted: dict[tuple[str, str], int] = {}
    live: set[tuple[str, int, str]] = set()
    for job_id, queue, priority, group, lease_until, limits, expires_at, task, run_at, gconc in db.execute(
            "SELECT id, queue, priority, grp, lease_until, limits, expires_at, task, run_at, gconc FROM jobs "
            "WHERE status = 'running'"):
        live.add((queue, priority, group))
        if lease_until is not None and lease_until < now:
            abandoned.setdefault((queue, priority, group), []).append(
                (job_id, queue, limits, expires_at, task, run_at, gconc))
        elif gconc is not None:
            counted[(queue, group)] = counted.get((queue, group), 0) + 1
    return abandoned, counted, live


def served(db: sqlite3.Connection, queue: str, priority: int, group: str, vtime: float, lowest: float) -> None:
    """The group had a turn: it moves behind the groups of its priority that have not."""
    db.execute("UPDATE job_groups SET vtime = ? WHERE queue = ? AND priority = ? AND grp = ?",
               (max(vtime, lowest) + 1.0, queue, priority, group))


def leave(db: sqlite3.Connection, idle: list[tuple[str, int, str]]) -> None:
    """Drop groups found with no waiting and no running row."""
    db.executemany("DELETE FROM job_groups WHERE queue = ? AND priority = ? AND grp = ?", idle)


def over_limit(gconc: Any, running: int) -> bool:
    """A group at its ``group_concurrency`` (None: no limit) cannot start another job."""
    return gconc is not None and running >= int(gconc)
