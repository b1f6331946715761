"""Failed jobs in bulk (the dead-letter tools): list, retry, delete and export a filtered set.

One filter for every surface (HTTP, CLI, dashboard)::

    f = FailedFilter.parse({"queue": "email", "task": "send_email", "error": "Timeout",
                            "user_id": "42", "since": "2026-12-01T00:00:00Z", "until": 1765000000})
    page = list_failed(f, page=1, limit=20)      # FailedPage: jobs (newest failure first), total, complete
    retry_failed(f, dry_run=True)                # {"matched": 3, "retried": 0, ...}
    delete_failed(f, dry_run=False)              # {"matched": 3, "deleted": 3, ...}
    for job in export_failed(f): ...            # every matching Job

A job matches when every filter given holds: its queue, its task name, ``error`` a
(case-sensitive) substring of its error text, its user, and its failure time (``ended_at``) in
``[since, until]``. ``since``/``until`` are ISO 8601 (no zone means UTC) or epoch seconds.

Cost, bounded per call: the failed registries (``rq:failed:<q>``, newest first) are read in
ranges of :data:`CHUNK` ids, with one pipelined HMGET of only the fields the filter needs per
range, and at most ``JOBS_FAILED_SCAN_MAX`` entries of each queue are looked at (no KEYS/SCAN).
A queue holding more failed jobs than that is searched in its newest ``JOBS_FAILED_SCAN_MAX``
only, and the answer says so (``complete: false``; ``total`` is then a lower bound). Retry and
delete go through :mod:`core.queue.lifecycle` (its requeue and delete scripts, pipelined), so a
job that changed state meanwhile is skipped, never overwritten.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.api.jobs import fetch_jobs
from core.config import QUEUE_NAMES, get_settings
from core.errors import InvalidFilterError
from core.platform import keys
from core.platform.connection import get_redis
from core.queue import lifecycle
from core.queue.job_model import Job
from core.queue.job_options import USER_ID_RE
from core.queue.rq_compat import parse_time

logger = logging.getLogger(__name__)

CHUNK = 500  # ids per registry range read and per pipelined HMGET / script batch
FILTER_KEYS = ("queue", "task", "error", "user_id", "since", "until")
ERROR_MAX_CHARS = 200
_TASK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_EPOCH = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_PLUS_LOST = re.compile(r"^(.*T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def parse_when(name: str, raw: Any) -> float | None:
    """``since``/``until`` as epoch seconds: an ISO 8601 time (no zone: UTC) or epoch seconds."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise InvalidFilterError(f"{name} must be an ISO 8601 time or epoch seconds, got {raw!r}")
    if isinstance(raw, int | float):
        if not 0 <= raw < 10**11:
            raise InvalidFilterError(f"{name} must be epoch seconds from 0 to 10^11, got {raw!r}")
        return float(raw)
    if not isinstance(raw, str) or len(raw) > 40:
        raise InvalidFilterError(f"{name} must be an ISO 8601 time (e.g. 2026-12-01T08:00:00Z) or epoch seconds, "
                                 f"got {_shown(raw)}")
    text = raw.strip()
    if _EPOCH.fullmatch(text):
        return float(text)
    text = _PLUS_LOST.sub(r"\1+\2", text)  # "+03:00" unencoded in a query string arrives as " 03:00"
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidFilterError(f"{name} must be an ISO 8601 time (e.g. 2026-12-01T08:00:00Z) or epoch seconds, "
                                 f"got {_shown(raw)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class FailedFilter:
    """Which failed jobs an operation applies to; every field given must hold (None: any)."""

    queue: str | None = None  # short name
    task: str | None = None
    error: str | None = None  # a substring of the error text
    user_id: str | None = None
    since: float | None = None  # epoch seconds, failure time at or after
    until: float | None = None  # epoch seconds, failure time at or before

    @classmethod
    def parse(cls, values: Mapping[str, Any], extra: tuple[str, ...] = (), strict: bool = True) -> FailedFilter:
        """The filter from a mapping (query args, a JSON body, CLI options). Empty values mean "any".
        ``strict``: a key that is neither a filter nor in ``extra`` is an error naming the accepted ones."""
        if strict:
            unknown = sorted(k for k in values if k not in FILTER_KEYS and k not in extra)
            if unknown:
                raise InvalidFilterError(f"unknown filter {_shown(unknown[0])}; accepted: "
                                         f"{', '.join((*FILTER_KEYS, *extra))}")
        queue = cls._text(values, "queue")
        if queue is not None:
            short = get_settings().short_queue_name(queue)
            if short not in QUEUE_NAMES:
                raise InvalidFilterError(f"unknown queue {_shown(queue)}; accepted: {', '.join(QUEUE_NAMES)}")
            queue = short
        task = cls._text(values, "task")
        if task is not None and not _TASK.fullmatch(task):
            raise InvalidFilterError(f"malformed task {_shown(task)}: expected 1-128 letters, digits, '_', '.', ':' "
                                     f"or '-'")
        error = cls._text(values, "error")
        if error is not None and len(error) > ERROR_MAX_CHARS:
            raise InvalidFilterError(f"error is {len(error)} characters long; at most {ERROR_MAX_CHARS} are accepted")
        user = values.get("user_id")
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        user = cls._text({"user_id": user}, "user_id")
        if user is not None and not USER_ID_RE.fullmatch(user):
            raise InvalidFilterError(f"malformed user_id {_shown(user)}: expected 1-128 letters, digits or _ . @ + : -")
        since, until = parse_when("since", values.get("since")), parse_when("until", values.get("until"))
        if since is not None and until is not None and since > until:
            raise InvalidFilterError(f"since ({values.get('since')}) is after until ({values.get('until')}); "
                                     f"nothing can match")
        return cls(queue, task, error, user, since, until)

    @staticmethod
    def _text(values: Mapping[str, Any], name: str) -> str | None:
        raw = values.get(name)
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise InvalidFilterError(f"{name} must be a string, got {_shown(raw)}")
        return raw

    def to_dict(self) -> dict[str, Any]:
        """The filters given (for answers and the audit log)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        """``queue=email task=send_email`` (``all failed jobs`` when empty)."""
        given = self.to_dict()
        return " ".join(f"{k}={v!r}" if k == "error" else f"{k}={v}" for k, v in given.items()) or "all failed jobs"

    def queues(self) -> tuple[str, ...]:
        return (self.queue,) if self.queue else QUEUE_NAMES

    def fields(self) -> tuple[str, ...]:
        """Job-hash fields a match needs (status and ended_at always: a gone or requeued job never matches)."""
        wanted = ["status", "ended_at"]
        if self.task:
            wanted.append("fk_task")
        if self.user_id:
            wanted.append("fk_user")
        if self.error:
            wanted.append("fk_error")
        return tuple(wanted)

    def matches(self, raw: dict[str, bytes | None]) -> float | None:
        """The job's failure time if its fields match, else None."""
        if raw.get("status") != b"failed":
            return None
        ended = parse_time(raw.get("ended_at")) or 0.0
        if self.since is not None and ended < self.since:
            return None
        if self.until is not None and ended > self.until:
            return None
        if self.task and (raw.get("fk_task") or b"").decode(errors="replace") != self.task:
            return None
        if self.user_id and (raw.get("fk_user") or b"").decode(errors="replace") != self.user_id:
            return None
        if self.error and self.error not in (raw.get("fk_error") or b"").decode(errors="replace"):
            return None
        return ended


@dataclass
class Matches:
    """What a scan found: ``(failure time, job id, queue)`` newest first, and whether it saw everything."""

    found: list[tuple[float, str, str]] = field(default_factory=list)
    scanned: int = 0
    complete: bool = True


def scan_failed(flt: FailedFilter, limit: int | None = None) -> Matches:
    """Every failed job matching ``flt`` among the newest ``JOBS_FAILED_SCAN_MAX`` of each queue.

    ``limit`` per queue overrides the setting (tests, and the automatic export)."""
    bound = limit if limit is not None else get_settings().failed_scan_max
    connection = get_redis()
    names = flt.fields()
    out = Matches()
    for queue in flt.queues():
        key = keys.failed(get_settings().full_queue_name(queue))
        start = 0
        while start < bound:
            count = min(CHUNK, bound - start)
            ids = [i.decode() for i in connection.zrevrange(key, start, start + count - 1)]
            if not ids:
                break
            with connection.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(keys.job(job_id), names)
                replies = pipe.execute()
            out.scanned += len(ids)
            for job_id, values in zip(ids, replies):
                ended = flt.matches(dict(zip(names, values)))
                if ended is not None:
                    out.found.append((ended, job_id, queue))
            start += len(ids)
            if len(ids) < count:
                break
        if start >= bound and connection.zcard(key) > bound:
            out.complete = False
    out.found.sort(key=lambda item: (-item[0], item[1]))
    return out


@dataclass
class FailedPage:
    jobs: list[Job]
    total: int  # matches found (a lower bound when not complete)
    page: int
    limit: int
    scanned: int
    complete: bool

    def to_dict(self, view: Any = None) -> dict[str, Any]:
        show = view or (lambda job: job.to_dict())
        pages = max(1, (self.total + self.limit - 1) // self.limit)
        return {"jobs": [show(j) for j in self.jobs], "total": self.total, "page": self.page, "pages": pages,
                "limit": self.limit, "scanned": self.scanned, "complete": self.complete}


def list_failed(flt: FailedFilter, page: int = 1, limit: int = 20) -> FailedPage:
    """One page (counted from 1) of the matching failed jobs, newest failure first."""
    matches = scan_failed(flt)
    chosen = [job_id for _ended, job_id, _queue in matches.found[(page - 1) * limit: page * limit]]
    return FailedPage(fetch_jobs(chosen), len(matches.found), page, limit, matches.scanned, matches.complete)


def export_failed(flt: FailedFilter) -> Iterator[Job]:
    """Every matching failed job, newest failure first, read :data:`CHUNK` at a time."""
    found = scan_failed(flt).found
    for start in range(0, len(found), CHUNK):
        yield from fetch_jobs([job_id for _ended, job_id, _queue in found[start:start + CHUNK]])


def _bulk(flt: FailedFilter, dry_run: bool, verb: str) -> dict[str, Any]:
    matches = scan_failed(flt)
    done = 0
    if not dry_run:
        connection = get_redis()
        by_queue: dict[str, list[str]] = {}
        for _ended, job_id, queue in matches.found:
            by_queue.setdefault(queue, []).append(job_id)
        for queue, ids in by_queue.items():
            full = get_settings().full_queue_name(queue)
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                if verb == "retried":
                    done += lifecycle.requeue_failed_many(connection, chunk, full)
                else:
                    done += lifecycle.delete_failed_many(connection, chunk, full)
        logger.info("failed jobs %s: %d of %d matched (%s)", verb, done, len(matches.found), flt.describe())
    return {"matched": len(matches.found), verb: done, "dry_run": dry_run, "filter": flt.to_dict(),
            "scanned": matches.scanned, "complete": matches.complete}


def retry_failed(flt: FailedFilter, dry_run: bool = False) -> dict[str, Any]:
    """Requeue every matching failed job (``dry_run``: only count them): ``{"matched", "retried", ...}``."""
    return _bulk(flt, dry_run, "retried")


def delete_failed(flt: FailedFilter, dry_run: bool = False) -> dict[str, Any]:
    """Delete every matching failed job (``dry_run``: only count them): ``{"matched", "deleted", ...}``."""
    return _bulk(flt, dry_run, "deleted")
