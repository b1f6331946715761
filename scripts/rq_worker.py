"""The Fikiri worker: ``python scripts/rq_worker.py [email ai crm] [options]``.

Serves the named queues (all three by default, in priority order email > ai > crm), registers
every task at start, moves delayed jobs and retries onto their queues when due, and logs one
line per job. SIGTERM finishes the jobs in hand and exits 0; a second SIGTERM/SIGINT stops at
once and puts them back on their queues. ``--processes N`` runs N workers under one supervisor.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import QUEUE_NAMES, get_settings, reload_settings  # noqa: E402
from core.errors import UnknownQueueError  # noqa: E402
from core.platform.logs import configure_logging  # noqa: E402

try:  # the Lua scripts are read here: an install without one stops the worker, naming the file
    from core.api.queues import get_queue
    from core.platform.task_modules import ensure_task_modules
    from core.queue import task_registry
    from core.worker.loop import WORKER_CLASSES, Worker
except RuntimeError as exc:  # core.queue.lua_scripts.MissingScriptError (importing its name would raise it again)
    sys.exit(f"fikiri-worker: {exc}")

logger = logging.getLogger("fikiri.worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a Fikiri Jobs worker.")
    parser.add_argument("queues", nargs="*", help=f"queues to serve, in priority order (default: {' '.join(QUEUE_NAMES)})")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument(
        "--worker-class", choices=WORKER_CLASSES, default=None,
        help="prefork: reused child processes (default, JOBS_WORKER_CLASS); fork: a fresh process per job; "
             "simple: run jobs in the worker process; threaded: up to --concurrency jobs at once in threads",
    )
    parser.add_argument("--concurrency", type=int, default=None,
                        help="threads (threaded, default JOBS_WORKER_CONCURRENCY=8) or child processes "
                             "(prefork: default one per CPU; fork: default 1)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes to run (default 1)")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="most jobs a prefork or simple worker claims ahead of its free slots, adaptively: only "
                             "while the backlog is deep and the jobs short (JOBS_WORKER_PREFETCH, default 16; 0: "
                             "one job per free slot)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="extra module that registers tasks (repeatable; also JOBS_TASK_MODULES)")
    parser.add_argument("--name", default=None, help="worker name (default: host.pid.random)")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    parser.add_argument("--log-level", default=os.environ.get("JOBS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.prefetch is not None and args.prefetch < 0:
        parser.error(f"--prefetch must be 0 or more, got {args.prefetch}")
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    try:
        args.queue_names = [get_queue(q).name for q in (args.queues or QUEUE_NAMES)]
    except UnknownQueueError as exc:
        parser.error(str(exc))
    return args


def run_worker(args: argparse.Namespace) -> int:
    """Run one worker until it is stopped; it rides out Redis restarts by itself."""
    if args.prefetch is not None:
        os.environ["JOBS_WORKER_PREFETCH"] = str(args.prefetch)
        reload_settings()
    task_registry.load_task_modules(args.imports)
    logger.info("registered tasks: %s", task_registry.all_tasks())
    worker = Worker(args.queue_names, worker_class=args.worker_class, concurrency=args.concurrency, name=args.name,
                    settings=get_settings())
    return worker.work(burst=args.burst, max_jobs=args.max_jobs)


def run_supervisor(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``--processes`` copies of this script; forward signals; restart crashed ones."""
    child_argv = [sys.executable, str(Path(__file__).resolve()), *_without_processes(argv)]
    children: dict[int, subprocess.Popen] = {}
    stopping = {"count": 0}

    def spawn() -> None:
        proc = subprocess.Popen(child_argv)
        children[proc.pid] = proc

    def forward(signum: int, _frame: object) -> None:
        stopping["count"] += 1
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(args.processes):
        if stopping["count"]:  # a signal came while the others started: this one would never get it
            break
        spawn()
    exit_code = 0
    while children:
        for pid, proc in list(children.items()):
            code = proc.poll()
            if code is None:
                continue
            del children[pid]
            if stopping["count"] and code in (-signal.SIGTERM, -signal.SIGINT):
                code = 0  # stopped by the signal we forwarded before it had installed its handlers: no job in hand
            if code != 0:
                exit_code = code
            if not stopping["count"] and not args.burst and code != 0:
                logger.warning("worker process %s exited with %s; starting another", pid, code)
                time.sleep(1)
                spawn()
        time.sleep(0.2)
    return exit_code


def _without_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configure_logging(args.log_level)
    ensure_task_modules(args.imports)
    if args.processes > 1:
        return run_supervisor(args, argv)
    return run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
