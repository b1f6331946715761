"""A worker launcher for the kill loops: imports the package and the task modules once, then forks
a real :class:`core.worker.loop.Worker` process per ``spawn <class>`` line read on stdin and
answers its pid (as gunicorn's preload forks its workers). Starting a worker this way takes
milliseconds instead of a second of imports, so a test can SIGKILL 200 workers in a minute.

Each worker logs to ``<log dir>/worker-<pid>.log``. Run: ``python -m tests.worker_forker <log dir>
<queue> [--import module]``; it reaps its children and exits when stdin closes."""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    log_dir, queue = sys.argv[1], sys.argv[2]
    imports = sys.argv[4:5] if sys.argv[3:4] == ["--import"] else []
    from core.api.queues import get_queue
    from core.platform.connection import reset_connections
    from core.platform.logs import configure_logging
    from core.queue import task_registry
    from core.worker.loop import Worker

    task_registry.load_task_modules(imports)
    full = get_queue(queue).name
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    while line := sys.stdin.readline():
        parts = line.split()
        if not parts or parts[0] != "spawn":
            continue
        kind = parts[1]
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            log = os.open(os.path.join(log_dir, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            code = 1
            try:
                reset_connections()
                configure_logging("INFO")
                code = Worker([full], worker_class=kind, concurrency=2).work()
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    main()
