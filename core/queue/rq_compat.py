"""What we rely on from RQ beyond its documented API, in one place, pinned to one RQ version.

We write jobs in RQ's own hash layout so ``rq info``, ``redis-cli`` and RQ's ``Job.fetch`` see
them, but our scripts (``core/queue/lua``) do the writing. The layout facts they depend on are here;
``tests/test_rq_compat.py`` checks each against the installed RQ so an upgrade that changes one
fails loudly instead of corrupting jobs.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import rq

PINNED_RQ_VERSION = "3.0.0"

# RQ's timestamp format for created_at, started_at, ended_at (rq.utils._TIMESTAMP_FORMAT).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# RQ reads an uncompressed ``data`` field as well as a zlib one (rq.job.Job.restore). Ours is plain
# JSON up to this many bytes, so ``redis-cli HGETALL rq:job:<id>`` shows the call as it was made;
# a larger call is zlib-compressed when that makes it smaller (as RQ compresses every call).
# The price: a call over Redis's listpack value size (``hash-max-listpack-value``, 64 bytes) moves
# the job hash to the hashtable encoding, which zlib could have avoided for a very repetitive
# call; docs/BENCHMARKS.md has the bytes per pending job before and after (1 KiB chosen there).
COMPRESS_OVER = 1024
# RQ 3 job ids: letters, digits, '_' and '-' (rq.job.JOB_ID_PATTERN); ':' separates an execution id.
JOB_ID_PATTERN = r"[A-Za-z0-9_-]+"


def rq_version() -> str:
    return rq.__version__


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text up to the seconds


def format_time(moment: datetime | None = None) -> str:
    """RQ's text of ``moment`` (default: now). Now is formatted from the clock, the seconds part
    once per second: about 0.4 µs instead of 3 µs for ``datetime.now().strftime`` (every enqueue
    and claim writes one)."""
    global _second
    if moment is not None:
        return moment.strftime(TIME_FORMAT)
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        _second = cached
    return f"{cached[1]}.{nanos // 1000:06d}Z"


def epoch_to_rq_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(TIME_FORMAT)


def parse_time(raw: bytes | str | None) -> float | None:
    """RQ's time string as epoch seconds (None when empty or unreadable)."""
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    if len(text) == 27 and text[-1] == "Z" and text[10] == "T":  # RQ's own "%Y-%m-%dT%H:%M:%S.%fZ": the fast path
        try:  # fromisoformat is about 20x cheaper than strptime (a worker parses one per job claimed)
            return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def encode_data(task_name: str, kwargs: dict[str, Any], compress: bool = True, kwargs_json: str | None = None) -> bytes:
    """RQ's job ``data``: the JSON of ``(func_name, instance, args, kwargs)``; over
    :data:`COMPRESS_OVER` bytes zlib'd when that is smaller (``compress=False``: always JSON).
    ``kwargs_json``: ``kwargs`` already as compact JSON (the enqueue checked it so): spliced in,
    the same bytes without encoding the payload a second time."""
    import zlib

    if kwargs_json is None:
        raw = json.dumps([task_name, None, [], kwargs], separators=(",", ":")).encode()
    else:
        raw = f"[{json.dumps(task_name)},null,[],{kwargs_json}]".encode()
    if compress and len(raw) > COMPRESS_OVER:
        packed = zlib.compress(raw, 6)
        if len(packed) < len(raw):
            return packed
    return raw


def decode_data(raw: bytes | str | None) -> tuple[str, dict[str, Any]]:
    """``(task name, kwargs)`` from a job's ``data`` (plain JSON, or RQ's zlib-compressed JSON)."""
    if not raw:
        raise ValueError("job has no data")
    if isinstance(raw, str):
        raw = raw.encode()
    if raw[:1] != b"[":
        import zlib

        raw = zlib.decompress(raw)
    func_name, _instance, _args, kwargs = json.loads(raw)
    if not isinstance(func_name, str) or not isinstance(kwargs, dict):
        raise ValueError("job data is not (task name, kwargs)")
    return func_name, kwargs


# --- what RQ's tools read besides the job hash (issue 19) ----------------------------------------
# RQ lists queues from the set ``rq:queues`` (members are queue keys, rq.queue.Queue.all); enqueue.lua
# adds each queue there with its first job.
# RQ 3 keeps a job's outcome in a stream, ``rq:results:<id>`` (rq.results.Result): one entry per
# ended execution, fields ``type`` (Result.Type), ``worker_name``, and ``return_value`` (base64 of
# the serializer's bytes: with RQ's JSONSerializer, the result's JSON) or ``exc_string`` (base64 of
# the zlib'd text). Result.save: XADD MAXLEN ~ 10, then EXPIRE with the job's result or failure TTL.
RESULT_SUCCESSFUL = 1
RESULT_FAILED = 2
RESULT_STOPPED = 3
RESULTS_MAXLEN = 10
# RQ's ``description`` is the call (rq.job.Job.get_call_string: each argument's repr cut at 75
# characters). Ours is cut at 64 characters in all: a longer value would move a small job's hash
# out of Redis's compact listpack encoding (hash-max-listpack-value, 64 bytes).
DESCRIPTION_MAX = 64


def call_description(task_name: str, kwargs: dict[str, Any]) -> str:
    """The job's ``description`` as RQ writes it (``task(a=1, b='x')``), at most DESCRIPTION_MAX characters."""
    args = ", ".join(sorted(f"{name}={_cut(repr(value))}" for name, value in kwargs.items()))
    text = f"{task_name}({args})"  # rq.utils.get_call_string(task_name, (), kwargs, max_length=75), inlined
    return text if len(text) <= DESCRIPTION_MAX else text[:DESCRIPTION_MAX - 3] + "..."


def _cut(text: str) -> str:
    """rq.utils.truncate_long_string at 75 characters."""
    return text[:75] + "..." if len(text) > 75 else text


def result_return_value(result_json: str | None) -> str | None:
    """A result record's ``return_value``: base64 of the result's JSON (None: RQ writes no field)."""
    import base64

    if result_json is None or result_json == "null":
        return None
    return base64.b64encode(result_json.encode()).decode()


def result_exc_string(text: str) -> str:
    """A result record's ``exc_string``: base64 of the zlib'd error text."""
    import base64
    import zlib

    return base64.b64encode(zlib.compress(text.encode(), 6)).decode()
