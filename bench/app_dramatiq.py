"""Dramatiq 2 on a Redis broker, with the Results middleware for the latency actor.

Workers load it with ``dramatiq bench.app_dramatiq``; the harness builds its own broker per fresh
redis-server with ``make_broker(url)``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.tasks import noop, noop_result, sleep_io

QUEUE = "bench"


def make_broker(url: str) -> tuple[RedisBroker, RedisBackend]:
    """A Redis broker with actors ``noop``, ``sleep`` and ``noop_result`` (the last stores results)."""
    backend = RedisBackend(url=url)
    broker = RedisBroker(url=url)
    broker.add_middleware(Results(backend=backend))
    for name, func in (("noop", noop), ("sleep", sleep_io)):
        dramatiq.actor(func, actor_name=name, queue_name=QUEUE, broker=broker, max_retries=0)
    dramatiq.actor(noop_result, actor_name="noop_result", queue_name=QUEUE, broker=broker, max_retries=0,
                   store_results=True)
    return broker, backend


broker, backend = make_broker(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)
