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

import asyncio
import inspect
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


def _prepared(job_id: str, queue: str, task_name: str,
              undecodable: str | None) -> tuple[task_registry.TaskSpec | None, AttemptResult | None]:
    """The task to run, or the refusal that ends the attempt before it starts."""
    if undecodable:
        return None, AttemptResult(ok=False, retryable=False, error=f"refused to run job {job_id}: {undecodable}")
    spec = task_registry.get(queue, task_name)
    if spec is None:
        return None, refusal(task_name, queue)
    return spec, None


def _failed(exc: BaseException, spec: task_registry.TaskSpec, task_name: str, timeout: int | None,
            started: float) -> AttemptResult:
    """What an exception out of the task means; the one mapping sync and async tasks share."""
    duration = time.perf_counter() - started
    if isinstance(exc, RetryAfter):
        return AttemptResult(ok=False, error=exc.reason, defer=exc.seconds, duration=duration)
    if isinstance(exc, JobStopped):
        return AttemptResult(ok=False, retryable=False, error=f"JobStopped: task {task_name!r} was stopped and did "
                             f"not end by itself; it was ended", duration=duration)
    if isinstance(exc, JobTimeoutException):
        error = f"JobTimeoutException: task {task_name!r} exceeded its timeout of {timeout}s"
        # the job-timeout is a TimeoutError to retry_on / dont_retry_on (a JobTimeoutException to RQ)
        filtered = _not_retried(spec, _JobTimeout, error, "the job timeout (a TimeoutError)")
        return replace(filtered or AttemptResult(ok=False, error=error), duration=duration)
    error = "".join(traceback.format_exception(exc)).strip()
    if isinstance(exc, PermanentJobError):
        return AttemptResult(ok=False, error=error, retryable=False, duration=duration)
    filtered = _not_retried(spec, type(exc), error)
    return replace(filtered or AttemptResult(ok=False, error=error), duration=duration)


def _succeeded(task_name: str, value: Any, started: float) -> AttemptResult:
    duration = time.perf_counter() - started
    text, problem = encode_result(task_name, value)
    if problem is not None:
        return AttemptResult(ok=False, error=problem, retryable=False, duration=duration)
    return AttemptResult(ok=True, result_json=text or "null", duration=duration)


def is_async(queue: str, task_name: str) -> bool:
    """True for a registered ``async def`` task (the async worker awaits it on its loop)."""
    spec = task_registry.get(queue, task_name)
    return spec is not None and inspect.iscoroutinefunction(spec.func)


def run_attempt(job_id: str, queue: str, task_name: str, kwargs: dict[str, Any], timeout: int | None,
                progress_sink: Callable[[Any], None] | None = None, undecodable: str | None = None,
                trace: dict[str, Any] | None = None) -> AttemptResult:
    """Run the registered task once; never raises (a crash becomes a failed AttemptResult).

    With tracing on (``[otel]``), the task runs in a CONSUMER span joined to the enqueue span
    through ``trace``; with Sentry initialised, a failure is reported tagged with the job.
    An ``async def`` task runs to its end on an event loop of its own (``asyncio.run``, about
    0.1 ms per job), through :func:`run_attempt_async`: the worker classes without a loop and the
    fallback run async tasks too."""
    spec, refused = _prepared(job_id, queue, task_name, undecodable)
    if spec is None:
        assert refused is not None
        return refused
    if inspect.iscoroutinefunction(spec.func):
        started = time.perf_counter()
        try:
            return asyncio.run(run_attempt_async(job_id, queue, task_name, kwargs, timeout, progress_sink, None, trace))
        except asyncio.CancelledError as exc:  # a cancellation that was not a stop: still an outcome, never a crash
            return _failed(exc, spec, task_name, timeout, started)
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
    except BaseException as exc:  # noqa: BLE001 - a task's SystemExit/KeyboardInterrupt is its failure too
        if isinstance(exc, KeyboardInterrupt | SystemExit) and threading.current_thread() is threading.main_thread():
            raise
        return _failed(exc, spec, task_name, timeout, started)
    finally:
        progress.unbind(token)
    return _succeeded(task_name, value, started)


async def run_attempt_async(job_id: str, queue: str, task_name: str, kwargs: dict[str, Any], timeout: int | None,
                            progress_sink: Callable[[Any], None] | None = None, undecodable: str | None = None,
                            trace: dict[str, Any] | None = None) -> AttemptResult:
    """:func:`run_attempt` for an ``async def`` task, awaited in the current event loop.

    The same refusals, retry filters, result rules and outcome as a sync task. The timeout is the
    loop's (``asyncio.timeout``) and a hard stop cancels the task (:func:`stopping.guard_task`):
    both interrupt a task at the ``await`` it waits in, without touching the loop's other jobs.
    A cancellation that is neither (the worker's loop shutting down) propagates."""
    spec, refused = _prepared(job_id, queue, task_name, undecodable)
    if spec is None:
        assert refused is not None
        return refused
    if not inspect.iscoroutinefunction(spec.func):
        raise TypeError(f"task {task_name!r} is not an async def; run it with run_attempt")
    started = time.perf_counter()
    token = progress.bind(job_id, progress_sink or (lambda _value: None))
    try:
        with tracing.job_span(trace, task_name, queue, job_id), stopping.guard_task(job_id) as entry:
            try:
                if timeout and timeout > 0:
                    async with asyncio.timeout(timeout) as deadline:
                        value = await spec.func(**kwargs)
                else:
                    deadline = None
                    value = await spec.func(**kwargs)
            except TimeoutError as exc:
                if deadline is not None and deadline.expired():
                    raise JobTimeoutException(f"exceeded {timeout}s") from exc
                raise
            except asyncio.CancelledError as exc:
                if entry.injected:  # the hard stop's cancellation, not the loop's: the task ends here
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    raise JobStopped() from exc
                raise
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - as run_attempt
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return _failed(exc, spec, task_name, timeout, started)
    finally:
        progress.unbind(token)
    return _succeeded(task_name, value, started)
