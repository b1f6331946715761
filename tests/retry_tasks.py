"""Tasks for the retry-policy and result-cap tests (tests/test_retry_policy.py).

Loaded with the other test tasks (tests.task_fixtures imports it). Each counts its runs in a Redis
key under ``test:`` that the test owns, so a test can prove how many attempts really ran."""

from __future__ import annotations

import time

from core.api.queues import email_queue
from core.platform.connection import get_redis


def _count(key: str) -> int:
    try:
        return int(get_redis().incr(key))
    except Exception:  # Redis down (a fallback test): the job's retry_count tells the story
        return 0


@email_queue.task(max_retries=3, retry_backoff=(100, 400), retry_jitter="none")
def fail_backoff_exact(key: str) -> None:
    """Always fails; retry n waits exactly 100 * 2**(n-1) s (at most 400)."""
    _count(key)
    raise RuntimeError("planned failure")


@email_queue.task(max_retries=3, retry_backoff=(100, 400))
def fail_backoff_jittered(key: str) -> None:
    """Always fails; full jitter (the default) over the same back-off."""
    _count(key)
    raise RuntimeError("planned failure")


@email_queue.task(retry_delays=[1, 2, 3600])
def fail_on_schedule(key: str) -> None:
    """Always fails; waits 1 s, 2 s, then 3600 s (max_retries comes from the schedule: 3)."""
    _count(key)
    raise RuntimeError("planned failure")


class ProviderDown(ConnectionError):
    """A subclass: retry_on=(ConnectionError,) covers it."""


KINDS = {"timeout": TimeoutError, "provider": ProviderDown, "refused": ConnectionRefusedError,
         "value": ValueError}


@email_queue.task(max_retries=2, retry_backoff=(0, 0), retry_on=(TimeoutError, ConnectionError),
                  dont_retry_on=(ConnectionRefusedError,))
def raise_kind(kind: str, key: str) -> None:
    """Raise the named exception (``slow``: outlive the job's timeout instead)."""
    _count(key)
    if kind == "slow":
        time.sleep(30)
    raise KINDS[kind](f"planned {kind}")


@email_queue.task(max_retries=2, retry_backoff=(0, 0), dont_retry_on=(LookupError,))
def lookup_fails(key: str) -> None:
    """A KeyError (a LookupError) is never retried; counted to prove one attempt."""
    _count(key)
    raise KeyError("no such row")


@email_queue.task(max_retries=2)
def big_result(size: int, key: str = "") -> str:
    """A result of ``size`` characters (its JSON is size + 2 bytes)."""
    if key:
        _count(key)
    return "x" * size
