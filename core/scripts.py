"""The Lua scripts that own every job state change, loaded once per process.

Each script lives in ``core/lua/<name>.lua`` with a header listing every key it touches (the
Dramatiq ``dispatch.lua`` rule: one script owns its keys). redis-py sends ``EVALSHA`` and loads
the script again by itself after a Redis restart (``NOSCRIPT``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from redis.commands.core import Script

_DIR = Path(__file__).resolve().parent / "lua"
NAMES = ("enqueue", "claim", "finish", "abandon", "cancel", "requeue", "promote", "delete", "fail", "periodic_claim",
         "import", "release_limits", "stop", "extend_permits")
USES = "-- uses: "
_scripts: dict[str, Script] = {}
_lock = threading.Lock()


def source(name: str) -> str:
    """A script's text; a first line ``-- uses: <lib>, <lib>`` puts ``core/lua/<lib>.lua`` in front of it
    (shared local functions: Redis has no script libraries before 7.0's functions)."""
    text = (_DIR / f"{name}.lua").read_text()
    if text.startswith(USES):
        libraries = [lib.strip() for lib in text.splitlines()[0][len(USES):].split(",")]
        text = "\n".join([*((_DIR / f"{lib}.lua").read_text() for lib in libraries), text])
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


def run(name: str, client: Any, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name`` on ``client`` (a connection or a pipeline)."""
    return get(name, client)(keys=keys, args=args, client=client)
