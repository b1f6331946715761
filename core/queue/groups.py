"""Job groups: fair shares per tenant on one queue.

A job names a group (``group="{user_id}"`` on a task, or ``group="acct-42"`` on one call; the
template resolves like a limit key: the payload first, then the job's ``user_id``). Jobs of one
queue and priority are then served round-robin across the groups that have jobs waiting, so one
tenant's 50,000-job backlog no longer sits in front of everyone else's clicks.

Design (the lifecycle scripts, ``core/queue/lua/groups_lib.lua``, do the work atomically):

* **Ungrouped jobs are untouched.** They wait in RQ's own ``rq:queue:<q>`` (and the high/low lists)
  exactly as before, so RQ's tools read them as before; the queue's own list is one more member of the
  rotation (``keys.UNGROUPED``), with weight 1.
* **A grouped job waits in its group's list** (``fikiri:gwait:<prio>:<q>:<group>``), not in
  ``rq:queue:<q>``: the claim must pick a group's oldest job in O(1), and a shared list would need an
  O(backlog) ``LREM``. RQ's ``rq info`` therefore does not count grouped jobs waiting; ``get_stats()``
  (``pending_jobs``), :func:`list_groups`, ``/metrics`` and the dashboard do, and every job stays an
  RQ job hash (``Job.fetch`` reads it). Scripts that put a job back to waiting (promote, abandon,
  release of a parked job, requeue) push it to the priority list as before; ``claim.lua`` moves a grouped
  id it meets there into its group, so those scripts know nothing of groups.
* **The rotation** is one ZSET per queue and priority: group -> virtual time. A claim serves the
  lowest score and adds ``1/weight``: equal weights give round-robin, weight 3 gives three turns to
  one. A joining group starts at the current lowest score (no credit for idle time). Priorities still
  come first: every high job of any group runs before any normal job.
* **Limits.** ``group_concurrency=N`` (stored on each job as ``fk_gconc``) caps the group's running
  jobs across every worker and host: the running count (``fikiri:grun:<q>``) of jobs carrying it is
  +1 in the claim and -1 in finish or abandon, in the same script that moves the job in or out of
  ``rq:wip:<q>``, so it is exact under SIGKILL and a Redis restart with AOF. Jobs without a limit are
  not counted there (it would cost each grouped job 2-3 more commands, over the issue's budget of 3);
  :func:`list_groups` reads every group's running jobs from ``rq:wip:<q>`` itself, exact as well. A
  group at its limit, or paused, is skipped by the rotation (its jobs stay in its list), never parked
  at the head of the queue. Rate and concurrency limits can key on the group: ``{group}`` in a
  limit key is the job's group (``rate_key="llm:{group}"``).
* **Idle groups leave.** A group's list vanishes when empty, and the next claim that reaches the group
  in the rotation finds it so and removes it (one LPOP; workers claim again right after a full batch,
  so this is immediate in practice); its running field is deleted at 0. Only an operator's weight or
  pause outlives that, until the operator resets it.

Measured costs are in docs/BENCHMARKS.md ("Job groups").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from core.config import QUEUE_NAMES, get_settings
from core.errors import JobsError, UnknownQueueError
from core.flow.limits import check_key_template, resolve_key
from core.platform import keys
from core.platform.connection import get_redis
from core.queue.rq_compat import parse_time

logger = logging.getLogger(__name__)

MAX_GROUP_CONCURRENCY = 10_000
MAX_WEIGHT = 1000
MAX_GROUPS_LISTED = 1000  # one page of list_groups at most
SCAN_GROUPS = 10_000  # groups read per rotation by list_groups (largest backlog first among them)


class InvalidGroupError(JobsError):
    """A group name, template, weight or limit that cannot be used (HTTP 400)."""

    code = "invalid_group"
    http_status = 400


def check_group_template(value: Any) -> str | None:
    """``group=`` as a task or a call gives it: None, or a key template (``"{user_id}"``, ``"acct-42"``)."""
    if value is None:
        return None
    template = check_key_template(value, "group")
    if keys.UNGROUPED in template:
        raise InvalidGroupError(f"group {template[:80]!r} contains a NUL character; accepted: printable text")
    return template


def check_group_concurrency(value: Any, group: str | None) -> int | None:
    """``group_concurrency=``: None, or a whole number from 1 to 10,000; it needs a group."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GROUP_CONCURRENCY:
        raise InvalidGroupError(f"group_concurrency must be a whole number from 1 to {MAX_GROUP_CONCURRENCY}, "
                                f"got {value!r}")
    if group is None:
        raise InvalidGroupError("group_concurrency needs group= (the template naming each job's group, e.g. "
                                "'{user_id}')")
    return value


def resolve_group(template: str | None, payload: dict[str, Any], user_id: str | None) -> str | None:
    """The job's group: the template filled from the payload, then from its ``user_id``."""
    if template is None:
        return None
    group = resolve_key(template, payload, "group", user_id)
    if not group or keys.UNGROUPED in group:
        raise InvalidGroupError(f"group {template!r} resolves to {group[:80]!r}; a group needs 1 or more "
                                f"characters and no NUL")
    return group


def _full(queue_short: str) -> str:
    if queue_short not in QUEUE_NAMES:
        raise UnknownQueueError(f"unknown queue {str(queue_short)[:40]!r}; accepted: {', '.join(QUEUE_NAMES)}")
    return get_settings().full_queue_name(queue_short)


def _check_name(group: Any) -> str:
    if not isinstance(group, str) or not 1 <= len(group) <= 200 or keys.UNGROUPED in group:
        raise InvalidGroupError(f"group must be a string of 1-200 characters without NUL, got {str(group)[:80]!r}")
    return group


def set_weight(queue_short: str, group: Any, weight: Any) -> None:
    """Give ``group`` ``weight`` turns of the rotation for every one a weight-1 group gets (1 resets it)."""
    full, group = _full(queue_short), _check_name(group)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= MAX_WEIGHT \
            or weight != weight:
        raise InvalidGroupError(f"weight must be a number above 0 and at most {MAX_WEIGHT}, got {weight!r}")
    if weight == 1:
        get_redis().hdel(keys.group_weights(full), group)
    else:
        get_redis().hset(keys.group_weights(full), group, repr(float(weight)))
    logger.info("group %s on queue %s: weight %s", group, queue_short, weight)


def pause(queue_short: str, group: Any) -> bool:
    """Hold ``group`` on this queue (its jobs wait; running ones finish); True if it was running."""
    full, group = _full(queue_short), _check_name(group)
    changed = bool(get_redis().sadd(keys.group_paused(full), group))
    if changed:
        logger.warning("group %s on queue %s paused", group, queue_short)
    return changed


def resume(queue_short: str, group: Any) -> bool:
    """Let ``group`` run again and wake a worker; True if it was paused."""
    full, group = _full(queue_short), _check_name(group)
    connection = get_redis()
    with connection.pipeline(transaction=True) as pipe:
        pipe.srem(keys.group_paused(full), group)
        pipe.lpush(keys.wake(full), "1")
        pipe.ltrim(keys.wake(full), 0, 0)
        changed = bool(pipe.execute()[0])
    if changed:
        logger.warning("group %s on queue %s resumed", group, queue_short)
    return changed


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def waiting_lists(connection: Any, full: str) -> list[str]:
    """The waiting-list keys of every group with jobs waiting on a queue, priority by priority (at
    most 10,000 groups per rotation): what a listing of pending jobs shows after the queue's own lists."""
    with connection.pipeline(transaction=False) as pipe:
        for priority in keys.PRIORITIES:
            pipe.zrange(keys.group_rotation(full, priority), 0, SCAN_GROUPS - 1)
        rotations = pipe.execute()
    return [keys.group_waiting(full, priority, _text(m)) for priority, members in zip(keys.PRIORITIES, rotations)
            for m in members if _text(m) != keys.UNGROUPED]


def list_groups(queue_short: str, limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The groups of a queue with jobs waiting or running, largest backlog first:
    ``{"groups": [{"group", "waiting", "running", "oldest_age", "weight", "paused"}], "total": N,
    "waiting": grouped jobs waiting in all}``.

    Cost: O(groups) reads (one LLEN per group and priority, pipelined; at most 10,000 groups per
    rotation are looked at), one HGET per job running (``running`` is read from ``rq:wip:<q>``,
    exact for every group; at most 10,000 in-flight jobs are looked at), then one job read per
    listed group for its oldest job's age. A queue with no group waiting and nothing running costs 4
    commands."""
    full = _full(queue_short)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_GROUPS_LISTED:
        raise InvalidGroupError(f"limit must be a whole number from 1 to {MAX_GROUPS_LISTED}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidGroupError(f"offset must be a whole number >= 0, got {offset!r}")
    connection = get_redis()
    with connection.pipeline(transaction=False) as pipe:
        for priority in keys.PRIORITIES:
            pipe.zrange(keys.group_rotation(full, priority), 0, SCAN_GROUPS - 1)
        pipe.zrange(keys.started(full), 0, SCAN_GROUPS - 1)
        *rotations, in_flight = pipe.execute()
    waiting_at = [(_text(m), priority) for priority, members in zip(keys.PRIORITIES, rotations) for m in members
                  if _text(m) != keys.UNGROUPED]
    if not waiting_at and not in_flight:  # nothing waits in a group, nothing runs: 4 commands in all
        return {"groups": [], "total": 0, "waiting": 0}
    with connection.pipeline(transaction=False) as pipe:
        for group, priority in waiting_at:
            pipe.llen(keys.group_waiting(full, priority, group))
        for member in in_flight:
            pipe.hget(keys.job(_text(member).rpartition(":")[0]), "fk_group")
        pipe.hgetall(keys.group_weights(full))
        pipe.smembers(keys.group_paused(full))
        *counts, weights_raw, paused_raw = pipe.execute()
    lengths, running_groups = counts[:len(waiting_at)], counts[len(waiting_at):]
    waiting: dict[str, int] = {}
    for (group, _priority), length in zip(waiting_at, lengths):
        waiting[group] = waiting.get(group, 0) + int(length)
    running: dict[str, int] = {}
    for raw in running_groups:
        if raw is not None:
            running[_text(raw)] = running.get(_text(raw), 0) + 1
    weights = {_text(g): float(w) for g, w in weights_raw.items()}
    paused = {_text(g) for g in paused_raw}
    names = sorted({g for g, n in waiting.items() if n} | set(running), key=lambda g: (-waiting.get(g, 0), -running.get(g, 0), g))
    page = names[offset:offset + limit]
    ages = _oldest_ages(connection, full, page)
    rows = [{"group": g, "waiting": waiting.get(g, 0), "running": running.get(g, 0), "oldest_age": ages.get(g, 0.0),
             "weight": weights.get(g, 1.0), "paused": g in paused} for g in page]
    return {"groups": rows, "total": len(names), "waiting": sum(waiting.values())}


def _oldest_ages(connection: Any, full: str, groups: list[str]) -> dict[str, float]:
    """Seconds since the oldest waiting job of each group was enqueued (its lists' heads)."""
    with connection.pipeline(transaction=False) as pipe:
        for group in groups:
            for priority in keys.PRIORITIES:
                pipe.lindex(keys.group_waiting(full, priority, group), 0)
        heads = pipe.execute()
    ids = [(groups[i // 3], _text(h)) for i, h in enumerate(heads) if h is not None]
    if not ids:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for _group, job_id in ids:
            pipe.hget(keys.job(job_id), "enqueued_at")
        stamps = pipe.execute()
    now = time.time()
    ages: dict[str, float] = {}
    for (group, _job_id), stamp in zip(ids, stamps):
        at = parse_time(stamp) if stamp else None
        if at is not None:
            ages[group] = max(ages.get(group, 0.0), round(max(0.0, now - at), 3))
    return ages


TOP_GROUPS = 5  # groups get_stats shows (and so /metrics and the dashboard)

