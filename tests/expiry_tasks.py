"""Tasks of tests/test_expiry.py (workers load them with ``--import tests.expiry_tasks``).

Every run appends to a Redis list the test owns, so a test proves whether a job ever ran."""

from __future__ import annotations

import time
from pathlib import Path

from core.api.queues import email_queue
from core.platform.connection import get_redis


@email_queue.task(max_retries=0, expires=3600)
def note_within_an_hour(key: str, value: str) -> str:
    """Declares a long expiry; a call can shorten it."""
    get_redis().rpush(key, value)
    return value


@email_queue.task(max_retries=0, expires=1)
def note_within_a_second(key: str, value: str) -> str:
    """Declares a one-second expiry; a call can lengthen it."""
    get_redis().rpush(key, value)
    return value


@email_queue.task(max_retries=0)
def note_when_released(key: str, value: str, release: str) -> str:
    """Record the start, wait until the key ``release`` exists (at most 60 s), then record the end."""
    get_redis().rpush(key, f"{value}:started")
    deadline = time.monotonic() + 60
    while not get_redis().exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    get_redis().rpush(key, value)
    return value


@email_queue.task(max_retries=1)
def fail_first_attempt(key: str) -> str:
    """The first attempt pauses the queue (so the retry waits until the test resumes it) and fails."""
    if get_redis().rpush(key, "attempt") == 1:
        email_queue.pause()
        raise RuntimeError("the first attempt fails")
    return "ran again"


@email_queue.task(max_retries=0)
def mark_file(path: str, value: str, gate: str | None = None) -> str:
    """For the fallback (no Redis): wait until the file ``gate`` exists (at most 60 s), then append
    ``value`` to the file ``path``."""
    deadline = time.monotonic() + 60
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(path, "a") as marks:
        marks.write(f"{value}\n")
    return value
