"""The Lua scripts that own every job state change, loaded once per process.

Each script lives in ``core/queue/lua/<name>.lua`` with a header listing every key it touches (the
Dramatiq ``dispatch.lua`` rule: one script owns its keys). redis-py sends ``EVALSHA`` and loads
the script again by itself after a Redis restart (``NOSCRIPT``).

Every script is read when this module is imported (19 small files, about 1 ms), so an install
that lacks one fails at import or at worker start with :class:`MissingScriptError` naming the
file, never later as an ``OSError`` in the middle of an enqueue (which once read as "Redis is
down" and sent every job to the in-process fallback).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from redis.commands.core import Script

from core.config import get_settings
from core.platform import keys as key_names
from core.platform.cluster import preload_on_new_master

_DIR = Path(__file__).resolve().parent / "lua"
NAMES = ("enqueue", "enqueue_plain", "claim", "finish", "abandon", "cancel", "requeue", "promote", "delete", "fail", "periodic_claim",
         "import", "release_limits", "stop", "extend_permits", "progress", "lease")
USES = "-- uses: "
_scripts: dict[str, Script] = {}
_lock = threading.Lock()


class MissingScriptError(RuntimeError):
    """A Lua script this package needs is not installed beside it: the install is incomplete."""


def _read(name: str) -> str:
    path = _DIR / f"{name}.lua"
    try:
        return path.read_text()
    except OSError as exc:
        raise MissingScriptError(
            f"Lua script {path} cannot be read ({exc.strerror or exc}); the fikiri-jobs install is incomplete: "
            f"reinstall the package (its wheel ships core/queue/lua/*.lua)") from exc


def _load(name: str) -> str:
    """A script's text; a first line ``-- uses: <lib>, <lib>`` puts ``core/queue/lua/<lib>.lua`` in front of it
    (shared local functions: Redis has no script libraries before 7.0's functions)."""
    text = _read(name)
    if text.startswith(USES):
        libraries = [lib.strip() for lib in text.splitlines()[0][len(USES):].split(",")]
        text = "\n".join([*(_read(lib) for lib in libraries), text])
    return text


def _compose_finish_claim() -> str:
    """finish.lua then claim.lua in one script (``finish_claim``): a busy worker records its jobs'
    ends and claims the next ones in one round trip. Each file's body becomes a function whose
    parameter ``ARGV`` shadows the global, so neither file changes: ARGV[1] is finish's request and
    ARGV[2..] claim's arguments (none: no claim). Returns {finish's reply, claim's three replies}."""
    bodies, libraries = [], []
    for name in ("finish", "claim"):
        text = _read(name)
        first, _, rest = text.partition("\n")
        for lib in first[len(USES):].split(","):
            if lib.strip() not in libraries:
                libraries.append(lib.strip())
        bodies.append(rest)
    return "\n".join([
        *(_read(lib) for lib in libraries),
        "local function finish_part(ARGV)", bodies[0], "end",
        "local function claim_part(ARGV)", bodies[1], "end",
        "local ended = finish_part({ARGV[1]})",
        "if #ARGV < 2 then return {ended, {}, false, {}} end",
        "local rest = {}",
        "for i = 2, #ARGV do rest[#rest + 1] = ARGV[i] end",
        "local claimed = claim_part(rest)",
        "return {ended, claimed[1], claimed[2], claimed[3]}",
    ])


_SOURCES: dict[str, str] = {name: _load(name) for name in NAMES}  # at import: a missing file fails here
_SOURCES["finish_claim"] = _compose_finish_claim()
preload_on_new_master(list(_SOURCES.values()))  # cluster mode: a call sent again on a new master finds them


def source(name: str) -> str:
    """The text of script ``name`` as read at import."""
    text = _SOURCES.get(name)
    if text is None:
        raise MissingScriptError(f"no Lua script named {name!r}; known: {', '.join(_SOURCES)}")
    return text


def get(name: str, client: Any) -> Script:
    """The script ``name``, registered once (its SHA is computed once per process)."""
    script = _scripts.get(name)
    if script is None:
        with _lock:
            script = _scripts.get(name)
            if script is None:
                script = client.register_script(source(name))
                _scripts[name] = script
    return script


def warm(client: Any) -> None:
    """Register every script now (their SHA1s computed here): a process about to fork work-horses
    calls this, so no child hashes a script again (measured 1.9 ms per fork-class job)."""
    for name in _SOURCES:
        get(name, client)


def declared(keys: list[str]) -> list[str]:
    """``keys`` as sent in ``KEYS``: in cluster mode with the slot guard after them (never read by
    a script: it only makes Redis refuse the call while the slot migrates, see
    :func:`core.platform.keys.slot_guard`)."""
    return [*keys, key_names.slot_guard()] if get_settings().redis_cluster else keys


def run(name: str, client: Any, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name`` on ``client`` (a connection or a pipeline)."""
    return get(name, client)(keys=declared(keys), args=args, client=client)


def evalsha_command(name: str, client: Any, keys: list[str], args: list[Any]) -> tuple:
    """The ``EVALSHA`` command of script ``name``, for a caller that packs it with others itself
    (the worker's ``BLPOP`` + claim in one write); the script must be loaded (NOSCRIPT otherwise)."""
    sent = declared(keys)
    return ("EVALSHA", get(name, client).sha, len(sent), *sent, *args)
