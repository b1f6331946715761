"""The one parsing layer for request input: query parameters, path values and JSON bodies.

Every route (API, ops, dashboard) reads its input through these functions, so bad input is a
400 naming the value received and what is accepted, never a 500:

* whole numbers are ASCII digits only (``'²'.isdigit()`` is True, but ``int('²')`` fails) and
  at most :data:`MAX_INT_DIGITS` long (a 5,000-digit number is not converted at all);
* JSON bodies are checked for nesting depth *before* they are parsed (a 20,000-deep array would
  otherwise raise ``RecursionError`` inside the parser), must be objects, and are UTF-8;
* strings are length-bounded and identifiers match one pattern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flask import request

from core.errors import InvalidPayloadError, JobsError
from core.queue.job_options import USER_ID_RE

MAX_INT_DIGITS = 12
MAX_JSON_DEPTH = 32
MAX_STRING_CHARS = 200
_ASCII_DIGITS = re.compile(r"[0-9]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class ParamError(InvalidPayloadError):
    """A query parameter, path value or body field that cannot be used (HTTP 400)."""


class UnsupportedMediaTypeError(JobsError):
    code = "unsupported_media_type"
    http_status = 415


def shown(value: Any, limit: int = 40) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def parse_int(name: str, raw: Any, low: int, high: int) -> int:
    """``raw`` (str or int) as a whole number from ``low`` to ``high``, else :class:`ParamError`."""
    accepted = f"{name} must be a whole number from {low} to {high} (ASCII digits)"
    if isinstance(raw, bool):
        raise ParamError(f"{accepted}, got {raw!r}")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and len(raw) <= MAX_INT_DIGITS and _ASCII_DIGITS.fullmatch(raw.strip(" ")):
        value = int(raw.strip(" "))
    else:
        raise ParamError(f"{accepted}, got {shown(raw)}")
    if not low <= value <= high:
        raise ParamError(f"{accepted}, got {value if abs(value) < 10**MAX_INT_DIGITS else shown(str(value))}")
    return value


def int_arg(name: str, default: int, low: int, high: int, args: Mapping[str, str] | None = None) -> int:
    """Query parameter ``name`` as a whole number from ``low`` to ``high`` (``default`` if absent)."""
    source = request.args if args is None else args
    raw = source.get(name)
    return default if raw is None else parse_int(name, raw, low, high)


def choice_arg(name: str, default: str, choices: Iterable[str], args: Mapping[str, str] | None = None) -> str:
    """Query parameter ``name`` as one of ``choices`` (``default`` if absent)."""
    source = request.args if args is None else args
    raw = source.get(name)
    return default if raw is None else parse_choice(name, raw, choices)


def parse_choice(name: str, raw: Any, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if not isinstance(raw, str) or raw not in options:
        raise ParamError(f"unknown {name} {shown(raw)}; accepted: {', '.join(options)}")
    return raw


def str_arg(name: str, args: Mapping[str, str] | None = None, max_chars: int = MAX_STRING_CHARS) -> str | None:
    """Query parameter ``name`` as a string of at most ``max_chars`` characters, or None."""
    source = request.args if args is None else args
    raw = source.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_chars:
        raise ParamError(f"{name} is {len(raw)} characters long; at most {max_chars} are accepted")
    return raw


def name_value(kind: str, raw: Any) -> str:
    """A path value naming a task, periodic job...: 1-128 letters, digits, ``_ . : -``."""
    if not isinstance(raw, str) or not _NAME.fullmatch(raw):
        raise ParamError(f"malformed {kind} {shown(raw, 80)}: expected 1-128 letters, digits, '_', '.', ':' "
                         f"or '-', starting with a letter or digit")
    return raw


def user_id_value(raw: Any, field: str = "user_id") -> str:
    """A user id from a path or a body: a string or integer of 1-128 letters, digits, ``_ . @ + : -``."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ParamError(f"{field} must be a string or an integer, got {type(raw).__name__}")
    text = str(raw)
    if not USER_ID_RE.fullmatch(text):
        raise ParamError(f"malformed {field} {shown(text, 80)}: expected 1-128 letters, digits or _ . @ + : -")
    return text


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit`` (a scan, no recursion, no parse)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json_object(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Bytes or text holding a JSON object, checked for depth before parsing."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ParamError(f"the body is not UTF-8 (byte {exc.start}); send JSON encoded as UTF-8") from exc
    if json_depth_exceeds(text, max_depth):
        raise ParamError(f"the JSON body nests deeper than {max_depth} levels; at most {max_depth} are accepted")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParamError(f"the body is malformed JSON ({str(exc)[:80]}); send a JSON object") from exc
    if not isinstance(body, dict):
        raise ParamError(f"the body is a JSON {type(body).__name__}, not an object; send e.g. {{\"prompt\": \"...\"}}")
    return body


def json_body(max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); 415 when it is not sent as JSON, else 400."""
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    if not request.is_json:
        raise UnsupportedMediaTypeError(
            f"send the body as JSON with Content-Type: application/json, got {shown(request.content_type or 'none')}"
        )
    return parse_json_object(raw, max_depth)


def body_bool(body: Mapping[str, Any], name: str, default: bool | None = None) -> bool | None:
    """Body field ``name`` as a JSON boolean (``default`` if absent)."""
    value = body.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise ParamError(f"\"{name}\" must be true or false, got {shown(value)}")
    return value


def body_int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """Body field ``name`` as a JSON integer from ``low`` to ``high``, or None if absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"\"{name}\" must be a whole number from {low} to {high}, got {shown(value)}")
    return parse_int(name, value, low, high)
