"""RQ's Job, restricted to registered tasks and JSON.

RQ normally imports whatever dotted path a job names. :class:`TaskJob` instead looks the job's
``func_name`` up in the task registry of the queue it came from, so a worker refuses anything
else with a clear error, and a refused job is not retried (it would be refused again).
"""

from __future__ import annotations

from typing import Any

from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core import task_registry
from core.errors import UnregisteredTaskError

SERIALIZER = JSONSerializer


def queue_short_name(rq_queue_name: str) -> str:
    """``fikiri:email`` -> ``email``."""
    return rq_queue_name.rsplit(":", 1)[-1]


class TaskJob(RQJob):
    """An RQ job whose function is a registered task name."""

    @property
    def func(self) -> Any:
        name = self.func_name
        queue = queue_short_name(self.origin or "")
        spec = task_registry.get(queue, name) if isinstance(name, str) and self.instance is None else None
        if spec is None:
            # Retrying cannot help: the same name will be refused again.
            self.retries_left = 0
            self.meta["refused"] = True  # saved with the error: no attempt ran, so none was retried
            registered = ", ".join(task_registry.names(queue)) or "none"
            raise UnregisteredTaskError(
                f"refused to run {name!r}: it is not a registered task on queue {queue or '?'}; "
                f"registered: {registered}"
            )
        return spec.func
