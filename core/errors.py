"""Exceptions raised to callers of the job API.

Each one carries a ``code`` (the machine-readable error code the HTTP API answers with) and a
message that names what was wrong, the value received and what is accepted.

The classes repeat one shape on purpose (a docstring, a ``code``, an ``http_status``): callers
catch each by its type, and the HTTP envelope reads the two attributes. ``duplicates`` lists the
catalogue; it is not logic written twice.
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


class InvalidFilterError(JobsError):
    """A failed-jobs filter that cannot be used: unknown key or queue, malformed task or user, a
    time that is neither ISO 8601 nor epoch seconds (core/api/dead_letters.py)."""

    code = "invalid_filter"


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


class DurabilityError(JobsError):
    """``JOBS_ENQUEUE_DURABILITY=replica``: no replica confirmed the enqueue in time (none connected,
    or lagging). The job was written on the primary and may still run: the caller learns that its
    acknowledgement is not the durable one it asked for."""

    code = "not_durable"
    http_status = 503


class JobsInternalError(JobsError):
    """Something other than a lost connection went wrong inside the job layer: Redis answered an
    error (``WRONGTYPE``, ``OOM``, a script error), refused our credentials, or our code failed.

    Never a reason to spool the job: the fallback is for a Redis that cannot be reached, and
    sending these there would hide the fault while jobs run in web processes. The traceback goes
    to the log; the message says what failed without server internals."""

    code = "internal_error"
    http_status = 500


class AuthError(JobsError):
    """No token, or one that is not valid (a forged or expired user token)."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(JobsError):
    """A valid token that may not do this (a user token on an admin route)."""

    code = "forbidden"
    http_status = 403


class NotConfiguredError(JobsError):
    """The API has no admin token and was not started in the insecure development mode."""

    code = "unavailable"
    http_status = 503


class UnregisteredTaskError(RuntimeError):
    """Raised inside a worker for a job naming a function that is not a registered task."""


class PermanentJobError(Exception):
    """Raise inside a task when another attempt cannot help (no connected account, a deleted
    record): the job fails at once with this message, without using its retries."""


class RetryAfter(Exception):  # noqa: N818 - named for the HTTP header it mirrors
    """Raise inside a task to run it again after ``seconds`` without holding a worker slot.

    The job goes back to ``delayed`` and is claimed again when the time comes. It is a deferral,
    not a failure: it uses none of the job's retries, and at most ``JOBS_MAX_DEFERRALS`` of them
    are allowed before the job fails (a peer that never stops asking would keep it forever).
    :func:`core.platform.http.request_with_backoff` raises it on 429/503 with a Retry-After header."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError(f"RetryAfter needs seconds >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.reason = reason or f"asked to run again in {self.seconds:g}s"
        super().__init__(self.reason)


class JobStopped(BaseException):  # noqa: N818 - it is not an error of the task
    """Raised inside a task that was stopped and did not end by itself within JOBS_STOP_GRACE.

    A BaseException, so a task's ``except Exception`` does not swallow it."""
