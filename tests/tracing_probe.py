"""Run by tests/test_tracing.py in its own process: ``enqueue`` enqueues a real job (the enqueue
path opens the span and stores its trace context in the job hash in Redis); ``run`` claims that
job from Redis and runs it through the workers' own runner, inside the worker-side span; ``fail``
runs a failing job with Sentry initialised from SENTRY_DSN. Each prints the finished spans as JSON
lines."""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.platform import tracing
from core.platform.connection import get_redis

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)


def dump() -> None:
    for span in exporter.get_finished_spans():
        print(json.dumps({"name": span.name, "kind": span.kind.name, "trace_id": span.context.trace_id,
                          "span_id": span.context.span_id, "parent": span.parent.span_id if span.parent else None,
                          "status": span.status.status_code.name, "attributes": dict(span.attributes)}))


def main(mode: str) -> None:
    if mode == "enqueue":
        from tests.task_fixtures import add

        job_id = add.enqueue(a=2, b=3)
        print(json.dumps({"job_id": job_id}))
    elif mode == "run":
        from core.api.queues import email_queue
        from core.queue import lifecycle
        from core.worker.executors import attempt

        (job,) = lifecycle.claim(get_redis(), "probe", "p1.", [email_queue.name], 1, 30)
        assert job.job_id == sys.argv[2] and attempt(get_redis(), job).ok
    elif mode == "fail":
        assert tracing.init_sentry()
        try:
            with tracing.job_span({}, "explode", "email", "job-that-fails-1"):
                raise ValueError("the task broke")
        except ValueError:
            pass
        import sentry_sdk

        sentry_sdk.flush(10)
    dump()


if __name__ == "__main__":
    main(sys.argv[1])
