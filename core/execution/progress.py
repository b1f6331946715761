"""Progress reporting from inside a task, whichever engine runs it.

A task calls ``report_progress({"done": 40, "total": 100})`` (any JSON value). The runner
(:mod:`core.execution.runner`) binds the running job to this context with a sink: a worker's sink writes
the job hash's ``fk_progress`` field, the fallback's updates its record. Outside a job it is a
no-op, so tasks can be called directly in tests.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from rq.timeouts import BaseTimeoutException

from core.execution.stopping import should_stop

__all__ = ["bind", "current_job_id", "report_progress", "should_stop", "unbind"]

logger = logging.getLogger(__name__)

_Binding = tuple[str, Callable[[Any], None]]
_bound: contextvars.ContextVar[_Binding | None] = contextvars.ContextVar("fikiri_job", default=None)


def bind(job_id: str, sink: Callable[[Any], None]) -> contextvars.Token:
    """Mark ``job_id`` as running in this context, its progress going to ``sink``."""
    return _bound.set((job_id, sink))


def unbind(token: contextvars.Token) -> None:
    _bound.reset(token)


def report_progress(value: Any) -> None:
    """Record the running job's progress (a number, or a small JSON object)."""
    bound = _bound.get()
    if bound is None:
        return
    try:
        bound[1](value)
    except BaseTimeoutException:  # the job's own timeout fired here: it must end the job
        raise
    except Exception:  # a failed progress write must never fail the job
        logger.exception("could not record progress of job %s", bound[0])


def current_job_id() -> str | None:
    """The id of the job being run in this context, if any (for idempotency keys)."""
    bound = _bound.get()
    return bound[0] if bound is not None else None
