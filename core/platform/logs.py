"""Log set-up for the worker, the scheduler and the app: text lines, or one JSON object per line.

``JOBS_LOG_FORMAT=json`` makes every line ``{"at", "level", "logger", "message", ...}`` with the
job fields of an attempt line (``job_id``, ``task``, ``queue``, ``outcome``, ``duration``) pulled
out, so a log shipper can index them without parsing text.
"""

from __future__ import annotations

import json
import logging
import re
import time

from core.config import get_settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ATTEMPT = re.compile(r"^job (?P<job_id>\S+) task=(?P<task>\S+) queue=(?P<queue>\S+)"
                      r"(?: duration=(?P<duration>[\d.]+)s)? outcome=(?P<outcome>\w+)")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; attempt lines also carry their fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": message,
        }
        match = _ATTEMPT.match(message)
        if match:
            entry.update({k: v for k, v in match.groupdict().items() if v is not None})
            if "duration" in entry:
                entry["duration"] = float(entry["duration"])  # type: ignore[arg-type]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str | int = "INFO") -> None:
    """Set up the root logger once for a process (text, or JSON with JOBS_LOG_FORMAT=json)."""
    handler = logging.StreamHandler()
    if get_settings().log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
