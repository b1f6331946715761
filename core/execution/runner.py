"""Run one attempt of a job: the same code for every worker class and for the fallback.

Huey's immediate mode runs jobs through the consumer's own ``execute()``; likewise here:
:func:`run_attempt` resolves the task from the registry (nothing else can run), binds progress
reporting, applies the timeout, calls ``fn(**payload)`` and turns the outcome into an
:class:`~core.queue.lifecycle.AttemptResult` whose result is JSON or whose error says why. Recording
the outcome is the caller's business (:func:`core.queue.lifecycle.finish`, or the fallback's memory).

Two rules of the task's declaration are applied here, so they hold the same in every worker class
and in the fallback: its ``retry_on`` / ``dont_retry_on`` filters (a failure they exclude is not
retryable, and its error says so and why), and ``JOBS_RESULT_MAX_BYTES`` (a larger JSON result fails
the job, not retried, the error giving both sizes).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rq.timeouts import JobTimeoutException, TimerDeathPenalty, UnixSignalDeathPenalty

from core.config import get_settings
from core.errors import JobStopped, PermanentJobError, RetryAfter
from core.execution import progress, stopping
from core.platform import tracing
from core.queue import task_registry
from core.queue.lifecycle import AttemptResult

logger = logging.getLogger(__name__)

JSON_TYPES = "dict, list, str, int, float, bool or None"


class _JobTimeout(JobTimeoutException, TimeoutError):
    """What the filters see for a job that exceeded its timeout: RQ's exception, and a TimeoutError."""


def refusal(task_name: str, queue: str) -> AttemptResult:
    registered = ", ".join(task_registry.names(queue)) or "none"
    return AttemptResult(
        ok=False, retryable=False,
        error=f"refused to run {task_name!r}: it is not a registered task on queue {queue}; registered: {registered}",
    )


def _penalty(timeout: int | None) -> Any:
    """SIGALRM in the main thread (simple and forked workers), a timer exception in other threads."""
    if not timeout or timeout <= 0:
        return None
    if threading.current_thread() is threading.main_thread():
        return UnixSignalDeathPenalty(timeout, JobTimeoutException)
    return TimerDeathPenalty(timeout, JobTimeoutException)


def encode_result(task_name: str, value: Any) -> tuple[str | None, str | None]:
    """(JSON text, None) or (None, the reason it is not JSON or is over ``JOBS_RESULT_MAX_BYTES``)."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        return None, (f"task {task_name!r} returned a {type(value).__name__}, which is not JSON ({exc}); "
                      f"a task must return {JSON_TYPES}")
    limit = get_settings().result_max_bytes
    if len(text) > limit:  # ensure_ascii: one byte per character
        return None, (f"task {task_name!r} returned a result of {len(text)} bytes of JSON, over the {limit}-byte limit "
                      f"(JOBS_RESULT_MAX_BYTES); not retried: store large output elsewhere (a file, a table) "
                      f"and return a reference to it")
    return text, None


def _not_retried(spec: task_registry.TaskSpec, kind: type[BaseException], error: str,
                 shown: str | None = None) -> AttemptResult | None:
    """A failed AttemptResult that must not be retried under the task's retry_on / dont_retry_on, or None.

    The reason joins the error's last line (``ValueError: bad id; not retried: ValueError is in
    dont_retry_on ...``), which is what users, events and logs show of an error."""
    why = spec.retry.not_retried_because(kind, spec.name, shown)
    if why is None:
        return None
    return AttemptResult(ok=False, retryable=False, error=f"{error.rstrip()}; {why}")


def run_attempt(job_id: str, queue: str, task_name: str, kwargs: dict[str, Any], timeout: int | None,
                progress_sink: Callable[[Any], None] | None = None, undecodable: str | None = None,
                trace: dict[str, Any] | None = None) -> AttemptResult:
    """Run the registered task once; never raises (a crash becomes a failed AttemptResult).

    With tracing on (``[otel]``), the task runs in a CONSUMER span joined to the enqueue span
    through ``trace``; with Sentry initialised, a failure is reported tagged with the job."""
    if undecodable:
        return AttemptResult(ok=False, retryable=False, error=f"refused to run job {job_id}: {undecodable}")
    spec = task_registry.get(queue, task_name)
    if spec is None:
        return refusal(task_name, queue)
    started = time.perf_counter()
    token = progress.bind(job_id, progress_sink or (lambda _value: None))
    try:
        penalty = _penalty(timeout)
        with tracing.job_span(trace, task_name, queue, job_id), stopping.guard(job_id):
            if penalty is None:
                value = spec.func(**kwargs)
            else:
                with penalty:
                    value = spec.func(**kwargs)
    except RetryAfter as exc:
        return AttemptResult(ok=False, error=exc.reason, defer=exc.seconds, duration=time.perf_counter() - started)
    except JobStopped:
        return AttemptResult(ok=False, retryable=False, error=f"JobStopped: task {task_name!r} was stopped and did "
                             f"not end by itself; it was ended", duration=time.perf_counter() - started)
    except JobTimeoutException:
        error = f"JobTimeoutException: task {task_name!r} exceeded its timeout of {timeout}s"
        # the job-timeout is a TimeoutError to retry_on / dont_retry_on (a JobTimeoutException to RQ)
        filtered = _not_retried(spec, _JobTimeout, error, "the job timeout (a TimeoutError)")
        return replace(filtered or AttemptResult(ok=False, error=error), duration=time.perf_counter() - started)
    except BaseException as exc:  # noqa: BLE001 - a task's SystemExit/KeyboardInterrupt is its failure too
        if isinstance(exc, KeyboardInterrupt | SystemExit) and threading.current_thread() is threading.main_thread():
            raise
        error = "".join(traceback.format_exception(exc)).strip()
        if isinstance(exc, PermanentJobError):
            return AttemptResult(ok=False, error=error, retryable=False, duration=time.perf_counter() - started)
        filtered = _not_retried(spec, type(exc), error)
        return replace(filtered or AttemptResult(ok=False, error=error), duration=time.perf_counter() - started)
    finally:
        progress.unbind(token)
    duration = time.perf_counter() - started
    text, problem = encode_result(task_name, value)
    if problem is not None:
        return AttemptResult(ok=False, error=problem, retryable=False, duration=duration)
    return AttemptResult(ok=True, result_json=text or "null", duration=duration)
