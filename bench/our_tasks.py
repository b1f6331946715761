"""The same work registered as Fikiri tasks (loaded through JOBS_TASK_MODULES=bench.our_tasks).

This is the only place, with ``bench.systems.Ours``, that imports our queue API; if the rewrite
moves it, change it here.
"""

import os
import time

from bench.marks import mark
from bench.tasks import async_sleep_io, noop, noop_result, sleep_1ms, sleep_io
from core.api.queues import email_queue
from core.platform.connection import get_redis

email_queue.register_task("noop", noop, max_retries=0)
email_queue.register_task("noop_result", noop_result, max_retries=0)
email_queue.register_task("sleep_100ms", sleep_io, max_retries=0)
email_queue.register_task("sleep_1ms", sleep_1ms, max_retries=0)
email_queue.register_task("async_sleep_100ms", async_sleep_io, max_retries=0)

# the limiter's cost (bench.limiter): the same no-op under limits far above the rate reached
email_queue.register_task("noop_rate_limited", noop, max_retries=0, rate_limit="1000000/s", rate_key="bench")
email_queue.register_task("noop_concurrency_limited", noop, max_retries=0, concurrency=10_000,
                          concurrency_key="bench")



def noop_spans(i: int = -1, tenant: str = "", **_payload: object) -> None:
    """Sleeps 2 ms and records ``tenant|start|end`` (this host's clock: every worker of the run is on
    it) in the Redis list ``bench:spans``, so bench.groups counts the runs of one group that overlapped."""
    start = time.time()
    time.sleep(0.002)
    get_redis().rpush("bench:spans", f"{tenant}|{start:.6f}|{time.time():.6f}")
    mark(i)


# job groups (bench.groups): the no-op above, plus one that records when it ran (the exactness check)
email_queue.register_task("noop_spans", noop_spans, max_retries=0)


def run_mark(path: str, item: str) -> None:
    """Appends ``item``, the time and the pid to the file ``path`` in one O_APPEND write: runs
    counted outside Redis, so bench.cluster_reshard sees a job that ran twice (and when, and where)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{item} {time.time():.6f} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


# reshards under load (bench.cluster_reshard): retries allowed, so a run cut short shows as a second run
email_queue.register_task("run_mark", run_mark, max_retries=3)
