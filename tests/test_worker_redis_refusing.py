"""Redis that answers but refuses writes — `maxmemory` reached (OOM) — is not "Redis down" and not
a crash: the worker (and its heartbeat thread) ride it out, retrying every second, and serve again
as soon as Redis takes writes. Found by the fault campaign (bench.chaos): a sweep's SET NX raised
OutOfMemoryError out of the worker loop (the worker exited 1) and killed the heartbeat thread."""

from __future__ import annotations

import time

import pytest

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform import keys
from core.queue.job_model import JobStatus
from tests.servers import wait_until


@pytest.mark.parametrize("worker_class", ["prefork", "threaded", "simple"])
def test_a_worker_rides_out_redis_refusing_writes(jobs_env, start_worker, worker_class):
    client = jobs_env.client()
    worker = start_worker("email", "--worker-class", worker_class)
    wait_until(lambda: client.scard(keys.workers()) == 1, timeout=20, message="the worker to register")
    [worker_key] = client.smembers(keys.workers())
    client.config_set("maxmemory", 1)  # every write is refused with OOM from now on
    try:
        time.sleep(5)  # several sweeps (every 2 s here) and heartbeats (every 1 s) meet the OOM
        assert worker.proc.poll() is None, worker.log()[-3000:]
    finally:
        client.config_set("maxmemory", 0)
    before = client.hget(worker_key, "last_heartbeat")
    wait_until(lambda: client.hget(worker_key, "last_heartbeat") != before, timeout=10,
               message="the heartbeat thread to beat again after the OOM")
    job_id = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    done = wait_until(lambda: (j := get_job(job_id)).status.is_final and j, timeout=20, message="the job to end")
    assert done.status == JobStatus.COMPLETED and done.result == 5 and done.mode == "redis"
    assert "refuses writes" in worker.log()  # said plainly, not a traceback of a dead thread
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
