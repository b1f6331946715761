"""Checks that the task modules a worker is told to import exist, before it starts serving.

A worker with ``JOBS_TASK_MODULES=mytasks`` that cannot import ``mytasks`` would otherwise die in
a bare traceback on its first job; this names the module, where the name came from, and the
``sys.path`` that was searched.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterable

from core.config import get_settings

logger = logging.getLogger(__name__)


class TaskModuleError(ImportError):
    """A configured task module cannot be imported."""


def _missing_message(module: str, source: str, exc: ModuleNotFoundError) -> str:
    searched = "\n  ".join(p or "(current directory)" for p in sys.path)
    return (
        f"task module {module!r} (from {source}) cannot be imported: {exc}.\n"
        f"sys.path searched:\n  {searched}\n"
        f"Install the package that provides it into this Python ({sys.executable}), "
        f"or add its directory to PYTHONPATH (or run the worker from that directory)."
    )


def check_task_modules(extra: Iterable[str] = ()) -> list[str]:
    """Import ``JOBS_TASK_MODULES`` and ``extra``; raise :class:`TaskModuleError` naming any missing one.

    Returns the modules imported. An error raised inside a module that does exist (a bug in it,
    or a dependency it lacks) is not hidden: it propagates with its own traceback.
    """
    wanted = [(m, "the JOBS_TASK_MODULES setting") for m in get_settings().task_modules]
    wanted += [(m, "--import") for m in extra]
    for module, source in wanted:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # Only the module itself (or a parent package) missing is a configuration mistake.
            if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
                raise TaskModuleError(_missing_message(module, source, exc)) from exc
            raise
    return [module for module, _ in wanted]


def ensure_task_modules(extra: Iterable[str] = ()) -> None:
    """:func:`check_task_modules` for a command's start: a missing module exits with status 2.

    Like ``rq worker``, a command started from a console script (``fikiri-worker``) also looks
    in its working directory, so a host app's ``mytasks.py`` beside it is found.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        check_task_modules(extra)
    except TaskModuleError as exc:
        logger.error("%s", exc)
        raise SystemExit(2) from None
