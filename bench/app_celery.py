"""Celery 5 on a Redis broker (and Redis results for the latency task), for ``bench.peers``.

Workers load it with ``celery -A bench.app_celery worker``; the harness builds its own app per
fresh redis-server with ``make_app(url)``. The throughput tasks ignore results (Celery's fastest
sensible set-up); ``noop_result`` stores one so the latency test can wait for it.
"""

from __future__ import annotations

import os

from celery import Celery

from bench.tasks import noop, noop_result, sleep_io

QUEUE = "bench"
TASKS = {"noop": "bench.noop", "sleep": "bench.sleep_io", "noop_result": "bench.noop_result"}


def make_app(url: str) -> Celery:
    """A Celery app with the three benchmark tasks on queue ``bench``."""
    app = Celery("bench", broker=url, backend=url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False, task_acks_late=False)
    app.task(name=TASKS["noop"], ignore_result=True)(noop)
    app.task(name=TASKS["sleep"], ignore_result=True)(sleep_io)
    app.task(name=TASKS["noop_result"])(noop_result)
    return app


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
