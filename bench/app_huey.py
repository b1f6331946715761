"""Huey 3 with Redis storage (blocking dequeue, its default), for ``bench.peers``.

Workers load it with ``huey_consumer bench.app_huey.huey``; the harness builds its own instance
per fresh redis-server with ``make_huey(url)``. Huey stores a result only when a task returns
something, so ``noop`` and ``sleep`` store nothing and ``noop_result`` stores its argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from huey import RedisHuey

from bench.tasks import noop, noop_result, sleep_io


def make_huey(url: str) -> tuple[RedisHuey, dict[str, Callable[..., Any]]]:
    """A RedisHuey named ``bench`` and its three task wrappers by benchmark name."""
    instance = RedisHuey("bench", url=url)
    tasks = {name: instance.task(name=name)(func)
             for name, func in (("noop", noop), ("sleep", sleep_io), ("noop_result", noop_result))}
    return instance, tasks


huey, TASKS = make_huey(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
