"""What a worker records when a job ends: queue counters, and the hooks that build on them.

The worker calls :func:`record_outcome` once per execution. Counters live in one small hash
per queue (``fikiri:stats:<queue>``), so stats stay O(1). Other modules (task metrics) add
themselves with :func:`add_listener` instead of being wired into the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from core import keys

logger = logging.getLogger(__name__)

# Outcomes of one execution.
COMPLETED = "completed"
FAILED = "failed"  # final: no attempts left
RETRYING = "retrying"  # failed, another attempt is scheduled


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    queue: str  # short name
    task_name: str
    outcome: str
    duration: float  # seconds
    error: str | None = None
    finished_at: float = 0.0  # epoch seconds


Listener = Callable[[Pipeline, JobOutcome], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Call ``listener(pipeline, outcome)`` for every recorded outcome (same round trip)."""
    if listener not in _listeners:
        _listeners.append(listener)


def record_outcome(connection: Redis, outcome: JobOutcome) -> None:
    """Count the outcome and let listeners add to the same pipeline; never raises."""
    field = {COMPLETED: "completed", FAILED: "failed", RETRYING: "retried"}[outcome.outcome]
    try:
        with connection.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.queue_counters(outcome.queue), field, 1)
            for listener in _listeners:
                listener(pipe, outcome)
            pipe.execute()
    except Exception:  # metrics must never fail a job
        logger.exception("could not record the outcome of job %s", outcome.job_id)
