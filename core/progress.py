"""Progress reporting from inside a task, whichever engine runs it.

A task calls ``report_progress({"done": 40, "total": 100})`` (any JSON value). Under an RQ
worker it lands in the job's ``meta["progress"]``; in the threading fallback it updates the
in-memory job. Outside a job it is a no-op, so tasks can be called directly in tests.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from rq import get_current_job

logger = logging.getLogger(__name__)

_Binding = tuple[str, Callable[[Any], None]]
_bound: contextvars.ContextVar[_Binding | None] = contextvars.ContextVar("fikiri_job", default=None)


def bind(job_id: str, sink: Callable[[Any], None]) -> contextvars.Token:
    """Mark ``job_id`` as running in this context, its progress going to ``sink`` (the fallback)."""
    return _bound.set((job_id, sink))


def unbind(token: contextvars.Token) -> None:
    _bound.reset(token)


def report_progress(value: Any) -> None:
    """Record the running job's progress (a number, or a small JSON object)."""
    bound = _bound.get()
    if bound is not None:
        bound[1](value)
        return
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = value
    job.save_meta()


def current_job_id() -> str | None:
    """The id of the job being run in this context, if any (for idempotency keys)."""
    bound = _bound.get()
    if bound is not None:
        return bound[0]
    job = get_current_job()
    return job.id if job is not None else None
