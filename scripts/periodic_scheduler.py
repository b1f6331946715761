"""The periodic-job scheduler: ``python scripts/periodic_scheduler.py [--interval S] [--once]``.

Registers the built-in periodic jobs (idempotently), then every ``JOBS_SCHEDULER_INTERVAL``
seconds enqueues the runs that are due, the host app's schedules included: those are read from
Redis at each pass, so one added through Python, the CLI or HTTP needs no restart here. Each run is claimed atomically, so two schedulers started by
mistake never enqueue it twice. It survives Redis restarts: on a connection error it waits with
back-off, then registers again and carries on. SIGTERM/SIGINT stop it after the current pass.
Each pass writes the heartbeat (core/schedule/heartbeat.py) that health, /metrics and the
"scheduler silent" alert read.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from core.config import get_settings  # noqa: E402
from core.queue.task_registry import load_task_modules  # noqa: E402
from core.schedule import heartbeat  # noqa: E402
from core.schedule.periodic import JsonScheduler, register_periodic_jobs, registered_marker_key  # noqa: E402

logger = logging.getLogger("fikiri.scheduler")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Fikiri Jobs periodic scheduler.")
    parser.add_argument("--interval", type=float, default=None, help="seconds between passes (JOBS_SCHEDULER_INTERVAL)")
    parser.add_argument("--once", action="store_true", help="register, run one pass, exit")
    parser.add_argument("--log-level", default=os.environ.get("JOBS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    from core.platform.logs import configure_logging

    configure_logging(args.log_level)
    interval = args.interval or get_settings().scheduler_interval
    if interval <= 0:
        parser.error(f"--interval must be positive, got {interval}")
    load_task_modules()

    stopping = {"now": False}

    def stop(signum: int, _frame: object) -> None:
        logger.info("signal %s: stopping after this pass", signum)
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    registered = False
    backoff = 0.5
    scheduler: JsonScheduler | None = None
    while not stopping["now"]:
        try:
            if not registered:
                entries = register_periodic_jobs()
                scheduler = JsonScheduler(interval=interval)
                logger.info("periodic jobs: %s", ", ".join(f"{e['id']} ({e['trigger']})" for e in entries))
                registered = True
            assert scheduler is not None
            if not scheduler.connection.exists(registered_marker_key()):
                logger.warning("periodic jobs are gone from Redis (restarted without persistence?); registering again")
                registered = False
                continue
            scheduler.enqueue_jobs()
            heartbeat.beat(interval, scheduler.connection)  # health, /metrics and the silence alert read it
            backoff = 0.5
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("Redis unreachable (%s); retrying in %.1fs", exc, backoff)
            registered = False
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        if args.once:
            break
        deadline = time.monotonic() + interval
        while not stopping["now"] and time.monotonic() < deadline:
            time.sleep(min(0.2, interval))
    logger.info("scheduler stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
