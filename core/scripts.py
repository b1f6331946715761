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
NAMES = ("enqueue", "claim", "finish", "abandon", "cancel", "requeue", "promote", "delete", "fail", "periodic_claim", "import")
_scripts: dict[str, Script] = {}
_lock = threading.Lock()


def source(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text()


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
