"""Task objects and waiting for a job to end.

``@q.task(...)`` returns a :class:`Task`: still the plain function when called, plus

```python
job_id = send_welcome.enqueue(user_id=1)                      # the payload as keyword arguments
job_id = send_welcome.enqueue(user_id=1, _delay=60, _job_id="welcome-1")   # options: _-prefixed
job_id = send_welcome.options(priority="high", max_retries=5).enqueue(user_id=1)
job_id = send_welcome.delay(user_id=1)                        # the same as .enqueue
job = wait_for(job_id, timeout=30)                            # the ended Job, or TimeoutError
```

Options are the keyword arguments of ``RedisQueue.enqueue_job`` (``delay``, ``at``,
``priority``, ``job_id``, ``user_id``, ``timeout``, ``max_retries`` ...). A payload key cannot
start with ``_``: that prefix is how an option is told apart from the payload.

:func:`wait_for` does not poll: it wakes on the result record the worker writes when the job ends
(see :func:`core.api.waiting.wait_for`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.api.queues import RedisQueue
    from core.queue.job_model import Job

logger = logging.getLogger(__name__)



class Task:
    """A registered task: callable as the function it wraps, and enqueueable by name."""

    def __init__(self, queue: RedisQueue, name: str, func: Callable[..., Any],
                 options: dict[str, Any] | None = None) -> None:
        self.queue = queue
        self.name = name
        self.func = func
        self._options = dict(options or {})
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} on queue {self.queue.short_name}>"

    def _check_options(self, options: dict[str, Any]) -> None:
        accepted = [p for p in inspect.signature(self.queue.enqueue_job).parameters
                    if p not in ("self", "task_name", "payload")]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"unknown enqueue option(s) {', '.join(unknown)} for task {self.name!r}; "
                            f"accepted: {', '.join(accepted)} (as _name=... in .enqueue, or name=... in .options)")

    def options(self, **options: Any) -> Task:
        """A copy of this task whose ``.enqueue`` uses these enqueue options by default."""
        self._check_options(options)
        return Task(self.queue, self.name, self.func, {**self._options, **options})

    def enqueue(self, **payload: Any) -> str:
        """Queue a run with ``payload`` (``_option=value`` keywords are enqueue options); the job id."""
        options = {key[1:]: payload.pop(key) for key in list(payload) if key.startswith("_")}
        self._check_options(options)
        return self.queue.enqueue_job(self.name, payload, **{**self._options, **options})

    def delay(self, **payload: Any) -> str:
        """The same as :meth:`enqueue` (the name RQ and Celery users know)."""
        return self.enqueue(**payload)


def wait_for(job_id: str, timeout: float) -> Job:
    """Block until job ``job_id`` has ended (completed, failed or canceled) and return it.

    Raises :class:`TimeoutError` when it is still going after ``timeout`` seconds, and
    :class:`~core.errors.JobNotFoundError` when no such job exists. See
    :func:`core.api.waiting.wait_for`: it wakes on the job's end (its result record), no polling.
    """
    from core.api.waiting import wait_for as wait

    return wait(job_id, timeout)
