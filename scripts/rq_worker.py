"""The Fikiri worker: ``python scripts/rq_worker.py [email ai crm] [options]``.

Serves the named queues (all three by default, in priority order email > ai > crm), registers
every task at start, runs RQ's scheduler for delayed jobs and retry back-off, and logs one line
per job. SIGTERM finishes the job in hand and exits 0; a second SIGTERM/SIGINT stops at once and
puts the job back on its queue. ``--processes N`` runs N workers under one supervisor.
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

import redis  # noqa: E402

from core import task_registry  # noqa: E402
from core.config import QUEUE_NAMES, get_settings  # noqa: E402
from core.connection import new_redis  # noqa: E402
from core.errors import UnknownQueueError  # noqa: E402
from core.redis_queues import get_queue  # noqa: E402
from core.task_modules import ensure_task_modules  # noqa: E402
from core.worker import WORKER_CLASSES, build_worker  # noqa: E402

logger = logging.getLogger("fikiri.worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a Fikiri Jobs worker.")
    parser.add_argument("queues", nargs="*", help=f"queues to serve, in priority order (default: {' '.join(QUEUE_NAMES)})")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument(
        "--worker-class", choices=WORKER_CLASSES, default=None,
        help="fork: a work-horse process per job (default, JOBS_WORKER_CLASS); simple: run jobs in-process; "
             "threaded: up to --concurrency jobs at once in threads (I/O-bound work, fast mode)",
    )
    parser.add_argument("--concurrency", type=int, default=None,
                        help="jobs at once for --worker-class threaded (JOBS_WORKER_CONCURRENCY, default 8)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes to run (default 1)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="extra module that registers tasks (repeatable; also JOBS_TASK_MODULES)")
    parser.add_argument("--name", default=None, help="worker name (default: random)")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    parser.add_argument("--log-level", default=os.environ.get("JOBS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    try:
        args.queue_names = [get_queue(q).name for q in (args.queues or QUEUE_NAMES)]
    except UnknownQueueError as exc:
        parser.error(str(exc))
    return args


def wait_for_redis(connection: redis.Redis) -> None:
    """Block until Redis answers, backing off; systemd may start us before Redis."""
    delay = 0.5
    while True:
        try:
            connection.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("Redis at %s not reachable (%s); retrying in %.1fs", get_settings().redis_url, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def run_worker(args: argparse.Namespace) -> int:
    """Run a worker; if its loop ends because Redis went away, wait for Redis and start again.

    RQ's work loop quits on a connection error raised outside its dequeue (for example while
    recording a result). That is not a stop anyone asked for, so the process carries on with a
    fresh worker; the job that was in hand is retried by the abandoned-job sweep.
    """
    task_registry.load_task_modules(args.imports)
    logger.info("registered tasks: %s", task_registry.all_tasks())
    # RQ logs several lines per job at INFO; ours is the one line per job, so RQ speaks at WARNING
    # unless asked for DEBUG.
    rq_level = "DEBUG" if args.log_level.upper() == "DEBUG" else "WARNING"
    previous = None
    while True:
        connection = new_redis()
        wait_for_redis(connection)
        if previous is not None:
            previous.requeue_unstarted()
        worker = build_worker(args.queue_names, connection, worker_class=args.worker_class, name=args.name,
                              concurrency=args.concurrency)
        logger.info("worker %s (%s) serving %s", worker.name, type(worker).__name__, ", ".join(args.queue_names))
        try:
            worker.work(burst=args.burst, with_scheduler=True, logging_level=rq_level, max_jobs=args.max_jobs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("worker %s lost Redis while stopping (%s)", worker.name, exc)
        if args.burst or args.max_jobs or worker._shutdown_requested_date is not None:
            return 0
        logger.warning("worker %s stopped without being asked to (Redis connection lost?); starting a new one",
                       worker.name)
        previous = worker
        time.sleep(1)


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
        spawn()
    exit_code = 0
    while children:
        for pid, proc in list(children.items()):
            code = proc.poll()
            if code is None:
                continue
            del children[pid]
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
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ensure_task_modules(args.imports)
    if args.processes > 1:
        return run_supervisor(args, argv)
    return run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
