"""The task registry: the only functions a worker will ever run.

A job stored in Redis names a task (``process_gmail_sync``), never a Python import path, so a
job written by anyone with Redis access cannot make a worker run ``os.system``. Tasks register
per queue; the built-in domain modules and ``JOBS_TASK_MODULES`` are imported on first use, in
the web process (so enqueue can check names) and in the worker (so it can run them).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.config import get_settings
from core.flow.limits import Limits
from core.queue.backoff import DEFAULT_POLICY, RetryPolicy

logger = logging.getLogger(__name__)

# core's own housekeeping tasks. The domain packages register theirs the way a host app does,
# through the task-module settings (JOBS_APP_TASK_MODULES, JOBS_TASK_MODULES).
BUILTIN_TASK_MODULES = ("core.ops.maintenance", "core.ops.alerts", "core.events.webhooks", "core.ops.retention")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: str  # short queue name: email, ai, crm
    func: Callable[..., Any]
    max_retries: int | None  # None: the queue's default
    fallback: bool = True  # False: never run in a web process while Redis is down (enqueue answers 503)
    limits: Limits = Limits()  # rate / concurrency limits declared on the task (core.flow.limits)
    expires: Any = None  # default expiry: seconds after enqueue, a timedelta or a datetime (core.queue.job_options)
    retry: RetryPolicy = DEFAULT_POLICY  # back-off, jitter, schedule and filters (core.queue.backoff)
    max_stalls: int = 1  # attempts lost to crashes before the next one fails the job (DESIGN.md "Crashes are stalls")
    interruptible: bool = True  # False: a shutdown waits for it past JOBS_WORKER_SHUTDOWN_TIMEOUT (core/worker/loop.py)
    group: str | None = None  # group key template, e.g. "{user_id}" (core.queue.groups)
    group_concurrency: int | None = None  # at most this many of one group's jobs run at once


_tasks: dict[str, dict[str, TaskSpec]] = {}
_lock = threading.RLock()
_loaded_modules: set[str] = set()


def register(queue: str, name: str, func: Callable[..., Any], max_retries: int | None = None,
             fallback: bool = True, limits: Limits | None = None, retry: RetryPolicy | None = None,
             expires: Any = None, max_stalls: int = 1, interruptible: bool = True,
             group: str | None = None, group_concurrency: int | None = None) -> TaskSpec:
    """Register ``func`` as task ``name`` on ``queue``.

    Registering a name again (the seeds' pattern: a web handler re-registers
    ``process_gmail_sync`` before enqueueing it) keeps what the first registration declared: its
    limits, and its retries and retry policy when this call gives none. A ``retry_delays``
    schedule with no ``max_retries`` allows one retry per delay. Workers run with the limits their own
    import declared, so a second registration that dropped them would weaken them in this
    process only; one that declares other limits is refused with a clear error instead."""
    if not callable(func):
        raise TypeError(f"task {name!r} must be callable, got {type(func).__name__}")
    if not name or not isinstance(name, str):
        raise ValueError("a task name must be a non-empty string")
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        raise ValueError(f"max_retries for task {name!r} must be a whole number >= 0, got {max_retries!r}")
    if isinstance(max_stalls, bool) or not isinstance(max_stalls, int) or not 0 <= max_stalls <= 100:
        raise ValueError(f"max_stalls for task {name!r} must be a whole number from 0 to 100, got {max_stalls!r}")
    if not isinstance(interruptible, bool):
        raise ValueError(f"interruptible for task {name!r} must be True or False, got {interruptible!r}")
    limits = limits or Limits()
    retry = retry or DEFAULT_POLICY
    if max_retries is None and retry.delays is not None:
        max_retries = len(retry.delays)
    with _lock:
        existing = _tasks.get(queue, {}).get(name)
        if existing is not None and existing.limits:
            if limits and limits != existing.limits:
                raise ValueError(
                    f"task {name!r} on queue {queue} is already registered with {describe_limits(existing.limits)}; "
                    f"registering it again with {describe_limits(limits)} would change its limits in this process "
                    f"only (workers keep theirs). Declare the same limits, none (to keep them), or use another name")
            limits = existing.limits
        if existing is not None and max_retries is None:
            max_retries = existing.max_retries
        if existing is not None and expires is None:
            expires = existing.expires
        if existing is not None and not retry:
            retry = existing.retry
        if existing is not None and max_stalls == 1 and interruptible:  # defaults: keep what was declared
            max_stalls, interruptible = existing.max_stalls, existing.interruptible
        if existing is not None and group is None:
            group, group_concurrency = existing.group, existing.group_concurrency
        spec = TaskSpec(name=name, queue=queue, func=func, max_retries=max_retries, fallback=fallback, limits=limits,
                        expires=expires, retry=retry or DEFAULT_POLICY, max_stalls=max_stalls,
                        interruptible=interruptible, group=group, group_concurrency=group_concurrency)
        _tasks.setdefault(queue, {})[name] = spec
    return spec


def describe_limits(limits: Limits) -> str:
    """``rate_limit 60/min per 'provider', concurrency 1 per 'gmail-sync:{user_id}'`` (or ``no limits``)."""
    parts = []
    if limits.rate is not None:
        parts.append(f"rate_limit {limits.rate.text} per {limits.rate_key or 'task'!r}")
    if limits.concurrency is not None:
        parts.append(f"concurrency {limits.concurrency} per {limits.concurrency_key or 'task'!r}")
    return ", ".join(parts) or "no limits"


def get(queue: str, name: str) -> TaskSpec | None:
    """The task ``name`` on ``queue``, loading task modules first if needed."""
    load_task_modules()
    return _tasks.get(queue, {}).get(name)


def names(queue: str) -> list[str]:
    load_task_modules()
    return sorted(_tasks.get(queue, {}))


def all_tasks() -> dict[str, list[str]]:
    load_task_modules()
    return {queue: sorted(tasks) for queue, tasks in sorted(_tasks.items())}


def load_task_modules(extra: tuple[str, ...] | list[str] = ()) -> None:
    """Import the built-in task modules, ``JOBS_TASK_MODULES`` and ``extra`` (once each)."""
    settings = get_settings()
    wanted = (*BUILTIN_TASK_MODULES, *settings.app_task_modules, *settings.task_modules, *extra)
    if all(module in _loaded_modules for module in wanted):
        return
    with _lock:
        for module in wanted:
            if module in _loaded_modules:
                continue
            # Mark first: a task module importing core.api.queues must not recurse here.
            _loaded_modules.add(module)
            try:
                importlib.import_module(module)
            except Exception:
                _loaded_modules.discard(module)
                raise
            logger.debug("loaded task module %s", module)
