"""The fallback spool under load and faults (issue 21 items 5 and 6), with real SQLite spool files
and a real redis-server: a hand-back cut short by Redis is finished by the next one, runners' ends
are written during an enqueue burst, an end is retried until written, and an enqueue that cannot
get the spool within JOBS_FALLBACK_ENQUEUE_WAIT answers 503 with the reason."""

from __future__ import annotations

import time

import redis

from core.api.jobs import get_job
from core.fallback.executor import FallbackExecutor
from core.fallback.spool import Spool
from core.queue.job_model import Job, JobStatus
from tests.servers import free_port


def _job(job_id: str, payload: dict | None = None) -> Job:
    return Job(job_id=job_id, queue="email", task_name="add", status=JobStatus.PENDING,
               payload=payload if payload is not None else {"a": 2, "b": 3}, max_retries=0, created_at=time.time())


def test_a_hand_back_cut_short_by_redis_is_finished_by_the_next_one(jobs_env, tmp_path):
    """Found by the fault campaign: Redis failing between a hand-back's take and its delete left the
    taken rows 'handing' for as long as the process lived (its lease renewal kept them)."""
    spool = Spool(tmp_path / "spool.db")
    for i in range(5):
        spool.add(_job(f"hb-{i}"), time.time(), 1, None, 100)
    executor = FallbackExecutor(spool=spool)
    executor.spool.renew(executor.owner, 30)  # a live holder renews what it holds
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)  # nothing listens: the enqueue fails
    try:
        executor.hand_back(dead)
    except redis.ConnectionError:
        pass
    else:
        raise AssertionError("a hand-back to a Redis that is not there must fail")
    assert {spool.get(f"hb-{i}").status for i in range(5)} == {"handing"}
    executor.spool.renew(executor.owner, 30)  # the lease is renewed: only the owner can finish them
    assert executor.hand_back() == 5
    assert all(get_job(f"hb-{i}").mode == "redis" for i in range(5))
    assert spool.unfinished()[0] == 0
