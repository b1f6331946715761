"""Exceptions raised to callers of the job API.

Each one carries a ``code`` (the machine-readable error code the HTTP API answers with) and a
message that names what was wrong, the value received and what is accepted.
"""

from __future__ import annotations


class JobsError(Exception):
    """Base class: ``code`` and ``http_status`` map the error onto the HTTP envelope."""

    code = "bad_request"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownTaskError(JobsError):
    """The task name is not registered on the queue."""

    code = "unknown_task"


class InvalidPayloadError(JobsError):
    """The payload is not a JSON object, or an enqueue option is out of range."""

    code = "invalid_payload"


class InvalidScheduleError(JobsError):
    """A periodic schedule that cannot be used: bad name, cron, time zone, interval or policy."""

    code = "invalid_schedule"


class PayloadTooLargeError(JobsError):
    code = "payload_too_large"
    http_status = 413


class UnknownQueueError(JobsError):
    code = "unknown_queue"
    http_status = 404


class JobNotFoundError(JobsError):
    code = "not_found"
    http_status = 404


class InvalidJobStateError(JobsError):
    """The action does not apply to a job in its current state (cancel a finished job...)."""

    code = "conflict"
    http_status = 409


class QueueUnavailableError(JobsError):
    """Redis is down and the fallback cannot take the job."""

    code = "unavailable"
    http_status = 503


class UnregisteredTaskError(RuntimeError):
    """Raised inside a worker for a job naming a function that is not a registered task."""


class PermanentJobError(Exception):
    """Raise inside a task when another attempt cannot help (no connected account, a deleted
    record): the job fails at once with this message, without using its retries."""
