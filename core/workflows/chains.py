"""Jobs in steps: dependencies, callbacks, chains and batches, all JSON, all in Redis.

Real Fikiri work comes in steps (sync the inbox, classify each new message, upsert CRM contacts,
send the digest). Everything here is decided inside the lifecycle scripts (``core/queue/lua/hooks_lib.lua``),
in the same atomic step as the job end that triggers it, so a SIGKILL or two workers finishing at
the same instant can neither lose nor repeat a step:

* ``depends_on=[ids]``: the job waits (``delayed``, reason "waiting for 2 job(s) to end: ...")
  until every dependency completed; if one fails or is canceled, it is canceled with the reason
  ("dependency <id> failed: <error>"), and so are the jobs waiting for it, unless
  ``on_dependency_failure="run"``.
* ``on_success="task"`` / ``on_failure="task"`` (or ``"queue:task"``): a registered task run as an
  ordinary job when the job ends, with ``parent_id`` and ``result`` (or ``outcome`` and ``error``).
  ``on_failure`` runs when the job ends failed or canceled.
* :func:`chain`: steps in order, each receiving the previous step's result as ``previous``.
* :func:`enqueue_batch`: the callback runs exactly once, when every member has ended, with the
  counts; :func:`get_batch` reads its progress.

Hooks run on a job's first final end only: a failed job retried by hand later does not run them
again. They need Redis: with Redis down these options answer 503 instead of running in the
fallback, which could not honour them.

Cost: a job with no hooks pays one HGET inside the finishing script; a dependency, a callback or a
batch member adds a few commands to the script that ends it, none to the worker's round trips.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from core.api.queues import RedisQueue, get_queue
from core.errors import InvalidPayloadError, JobsError, QueueUnavailableError
from core.platform.connection import redis_available
from core.queue.hooks import check_hooks

logger = logging.getLogger(__name__)

PREVIOUS = "previous"  # the payload key a chain step receives the previous step's result under


# --- chains ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One step of a :func:`chain`: a registered task, its payload and enqueue options."""

    task: str
    payload: dict[str, Any] | None = None
    queue: str = "email"
    options: dict[str, Any] = field(default_factory=dict)


def chain(steps: list[Step], user_id: str | int | None = None) -> list[str]:
    """Run ``steps`` in order: each starts when the previous one completed, with its result as the
    payload key ``previous``. A step that fails (after its retries) or is canceled cancels the rest,
    each with the reason. Returns the job ids, first step first.

    Every step is checked (queue, task, payload, options) before any is written, so a bad step k
    leaves no steps 1..k-1 running on their own; the error names the step. Like the other
    workflow options a chain needs Redis: with Redis down it answers 503 and spools nothing."""
    if not isinstance(steps, list | tuple) or not steps or not all(isinstance(s, Step) for s in steps):
        raise InvalidPayloadError("chain takes a non-empty list of core.workflows.Step")
    planned = []
    for index, step in enumerate(steps):
        try:
            queue = get_queue(step.queue)
            _check_step(queue, step, index, user_id)
            planned.append((queue, step))
        except JobsError as exc:  # the same error, naming the step
            exc.message = f"chain step {index} ({str(step.task)[:80]}): {exc.message}"
            exc.args = (exc.message,)
            raise
    if not redis_available():
        raise QueueUnavailableError("a chain needs Redis, which is unreachable now; nothing was written, "
                                    "try again in a moment")
    ids: list[str] = []
    for queue, step in planned:
        hooks = check_hooks(queue.short_name, depends_on=[ids[-1]] if ids else None)
        try:
            ids.append(queue._enqueue_one(step.task, step.payload, hooks, PREVIOUS if ids else None,
                                          allow_fallback=False, user_id=user_id, **step.options))
        except QueueUnavailableError as exc:
            written = f"; steps already written (they will run, cancel them if unwanted): {', '.join(ids)}" if ids else ""
            raise QueueUnavailableError(f"{exc.message}{written}") from exc
    logger.info("chain of %d steps: %s", len(ids), " -> ".join(ids))
    return ids


_STEP_OPTIONS = ("max_retries", "priority", "timeout", "job_id", "unique_for", "unique_key", "rate_limit",
                 "rate_key", "concurrency", "concurrency_key", "expires")  # delay/at: a step runs when the previous ends


def _check_step(queue: Any, step: Step, index: int, user_id: Any) -> None:
    """Raise what an enqueue of the step on ``queue`` would (nothing is written)."""
    unknown = sorted(set(step.options) - set(_STEP_OPTIONS))
    if unknown:
        raise InvalidPayloadError(f"option(s) {', '.join(map(repr, unknown))} not accepted in a chain step; "
                                  f"accepted: {', '.join(_STEP_OPTIONS)}")
    if index and PREVIOUS in (step.payload or {}):
        raise InvalidPayloadError(f"payload key {PREVIOUS!r} is taken: it carries the previous step's result")
    queue.check_enqueue(step.task, step.payload, user_id=user_id, **step.options)




def enqueue_batch(queue: str, task: str, payloads: list[dict[str, Any]], on_complete: str | None = None,
                  user_id: str | int | None = None, **options: Any) -> str:
    """Queue ``task`` once per payload on queue ``queue`` as one batch (see :meth:`RedisQueue.enqueue_batch`)."""
    target: RedisQueue = get_queue(queue)
    return target.enqueue_batch(task, payloads, on_complete=on_complete, user_id=user_id, **options)
