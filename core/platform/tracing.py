"""Optional tracing (OpenTelemetry, extra ``[otel]``) and error reporting (Sentry, ``[sentry]``).

Both are inert unless their package is installed (and, for Sentry, a DSN is configured or the
host initialised the SDK itself), so importing this module costs nothing.

The two call sites:

```python
# enqueue side (RedisQueue._enqueue_redis): a PRODUCER span; its context is stored in the job
# hash's ``fk_trace`` field
with tracing.enqueue_span(task_name, queue) as carrier:   # {"otel": {"traceparent": ...}} or {}
    job_id = ...write the job...
    tracing.set_job_id(job_id)

# worker side (core.execution.runner.run_attempt, every worker class): a CONSUMER span whose parent is the
# enqueue span (same trace), and a failure reported to Sentry tagged with job id, queue and task
with tracing.job_span(trace, task_name, queue, job_id):
    result = func(**payload)
```

Settings: ``JOBS_OTEL_ENABLED`` (default 1: spans when opentelemetry is installed and the host
configured a tracer provider), ``SENTRY_DSN`` (the worker initialises Sentry with it at start;
empty: only report if the host initialised Sentry itself).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from core.config import get_settings

logger = logging.getLogger(__name__)

META_KEY = "otel"  # job meta key holding the W3C trace context (traceparent, tracestate)
TRACER_NAME = "fikiri.jobs"


def _otel() -> Any:
    if not get_settings().otel_enabled:
        return None
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return None
    return trace, propagate


def enqueue_traced() -> bool:
    """Whether :func:`enqueue_span` could yield anything: OpenTelemetry is on and installed, and
    either the host set a tracer provider or a span context is current (the API's no-op tracer
    still passes a current parent's context on). False is the common case without an SDK, where
    an enqueue skips the span (about 10 µs of the API's no-op span per enqueue; issue 22 item 5)."""
    otel = _otel()
    if otel is None:
        return False
    trace = otel[0]
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return True
    return bool(trace.get_current_span().get_span_context().is_valid)


@contextmanager
def enqueue_span(task_name: str, queue: str) -> Iterator[dict[str, Any]]:
    """A PRODUCER span around an enqueue; yields what to merge into the job's meta."""
    otel = _otel()
    if otel is None:
        yield {}
        return
    trace, propagate = otel
    tracer = trace.get_tracer(TRACER_NAME)
    attributes = {"messaging.system": "rq", "messaging.destination.name": queue, "fikiri.task": task_name,
                  "messaging.operation.type": "send"}
    with tracer.start_as_current_span(f"enqueue {task_name}", kind=trace.SpanKind.PRODUCER,
                                      attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield {META_KEY: carrier} if carrier else {}


def set_job_id(job_id: str) -> None:
    """Record the job id on the current span (the enqueue span, inside :func:`enqueue_span`)."""
    otel = _otel()
    if otel is not None:
        otel[0].get_current_span().set_attribute("messaging.message.id", job_id)


@contextmanager
def job_span(meta: Mapping[str, Any] | None, task_name: str, queue: str, job_id: str) -> Iterator[None]:
    """A CONSUMER span around running a job, joined to the enqueue span through ``meta``; an
    exception is recorded on the span, reported to Sentry, and re-raised."""
    otel = _otel()
    try:
        if otel is None:
            yield
            return
        trace, propagate = otel
        carrier = (meta or {}).get(META_KEY) or {}
        parent = propagate.extract(carrier) if isinstance(carrier, Mapping) else None
        attributes = {"messaging.system": "rq", "messaging.destination.name": queue, "fikiri.task": task_name,
                      "messaging.message.id": job_id, "messaging.operation.type": "process"}
        tracer = trace.get_tracer(TRACER_NAME)
        with tracer.start_as_current_span(f"run {task_name}", context=parent, kind=trace.SpanKind.CONSUMER,
                                          attributes=attributes):
            yield
    except Exception as exc:
        report_failure(exc, job_id=job_id, queue=queue, task_name=task_name)
        raise


def init_sentry() -> bool:
    """Initialise Sentry from ``SENTRY_DSN`` unless it is already set up; True if it is active.

    Without a DSN, sentry_sdk is not imported (165 ms of a worker's start when it is installed):
    a host that set Sentry up itself has imported it already."""
    loaded = sys.modules.get("sentry_sdk")
    if loaded is not None and loaded.is_initialized():
        return True
    dsn = get_settings().sentry_dsn
    if not dsn:
        return False
    try:
        import sentry_sdk
    except ImportError:
        return False
    sentry_sdk.init(dsn=dsn, default_integrations=False, send_default_pii=False)
    return True


def report_failure(exc: BaseException, *, job_id: str, queue: str, task_name: str) -> None:
    """Send ``exc`` to Sentry (if it is initialised) tagged ``job_id``, ``queue`` and ``task``.
    Never imports sentry_sdk: not imported means not initialised (a fork-class work-horse once
    imported it for every failed job)."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None or not sentry_sdk.is_initialized():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job_id", job_id)
        scope.set_tag("queue", queue)
        scope.set_tag("task", task_name)
        scope.set_context("job", {"job_id": job_id, "queue": queue, "task": task_name})
        sentry_sdk.capture_exception(exc)


def after_fork() -> None:
    """In a pre-forked child: Sentry's sending thread did not survive the fork; start it again."""
    sentry_sdk = sys.modules.get("sentry_sdk")  # never imported here: once per fork-class job otherwise
    if sentry_sdk is None:
        return
    dsn = get_settings().sentry_dsn
    if dsn and sentry_sdk.is_initialized():
        sentry_sdk.init(dsn=dsn, default_integrations=False, send_default_pii=False)
