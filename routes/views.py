"""How a Job is shown, by audience: the admin sees the traceback, a user sees no internals.

A job's ``error`` in Redis is RQ's full traceback (file paths of the server, ``site-packages``,
source lines). Routes turn a Job into JSON or a page through :func:`job_view`, which for a user
keeps only the exception's type and message, trimmed, with anything that looks like a file path
replaced by ``<path>``.
"""

from __future__ import annotations

import re
from typing import Any

from core.queue.job_model import Job

USER_ERROR_MAX_CHARS = 300
_TRACEBACK_FRAME = re.compile(r'^\s*File "', re.MULTILINE)
# Absolute paths (/a, /a/b, ~/a, C:\\a) and relative paths to source files (pkg/mod.py).
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|~?/)[\w.@+-]+(?:[/\\][\w.@+-]*)*|[\w.-]+(?:/[\w.-]+)+\.py[cd]?")
_QUALIFIED_TYPE = re.compile(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)(?=:|$)")


def _last_exception_line(text: str) -> str:
    """The ``Type: message`` line of a traceback (its last non-empty line), or the text itself."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if not _TRACEBACK_FRAME.search(text) and not text.startswith("Traceback"):
        return " ".join(lines)
    return lines[-1]


def user_error(error: str | None) -> str | None:
    """What a user may see of an error: type and message, no traceback, no paths, trimmed."""
    if not error:
        return error
    line = _QUALIFIED_TYPE.sub(r"\1", _last_exception_line(error))  # rq.timeouts.X -> X
    line = _PATH.sub("<path>", line)
    if len(line) > USER_ERROR_MAX_CHARS:
        line = line[: USER_ERROR_MAX_CHARS - 3] + "..."
    return line


def job_view(job: Job, is_admin: bool) -> dict[str, Any]:
    """The job as JSON for this audience: everything for the admin, no internals for a user."""
    data = job.to_dict()
    if not is_admin:
        data["error"] = user_error(job.error)
    return data


def attempt_view(attempt: dict[str, Any], is_admin: bool) -> dict[str, Any]:
    """One stored execution result (the dashboard's attempts table) for this audience."""
    if is_admin:
        return attempt
    return {**attempt, "error": user_error(attempt.get("error")), "worker": None}
