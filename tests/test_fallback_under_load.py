"""The fallback spool under load and faults (issue 21 items 5 and 6), with real SQLite spool files
and a real redis-server: a hand-back cut short by Redis is finished by the next one, runners' ends
are written during an enqueue burst, an end is retried until written, and an enqueue that cannot
get the spool within JOBS_FALLBACK_ENQUEUE_WAIT answers 503 with the reason."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest
import redis

from core.api.jobs import get_job
from core.api.queues import ai_queue, email_queue
from core.config import get_settings, reload_settings
from core.errors import QueueUnavailableError
from core.fallback import executor as fallback_executor
from core.fallback.executor import FallbackExecutor, get_fallback
from core.fallback.spool import Spool
from core.platform.connection import redis_available, reset_connections
from core.queue.job_model import Job, JobStatus
from tests.conftest import ADMIN_TOKEN
from tests.servers import free_port, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.fallback]


def _redis_down(monkeypatch, **env: str) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reload_settings()
    reset_connections()
    assert not redis_available()


def _statuses(path) -> dict[str, int]:
    db = sqlite3.connect(str(path), timeout=10)
    try:
        return dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    finally:
        db.close()


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


def test_runners_ends_are_written_during_an_enqueue_burst(jobs_env, monkeypatch, caplog):
    """One thread enqueues 1,500 jobs of 60 KB back to back while the process's 4 runner threads
    run them: the runners' claims and ends get their turns during the burst (before the fix they
    waited out the busy timeout and failed with "database is locked"), no enqueue waits past its
    bound, and no runner fails."""
    _redis_down(monkeypatch, JOBS_FALLBACK_MAX_PENDING="100000")
    caplog.set_level(logging.WARNING, logger="core.fallback.executor")
    blob = "x" * 60_000
    slowest = 0.0
    ids = []
    for i in range(1500):
        began = time.perf_counter()
        ids.append(ai_queue.enqueue_job("ai_echo", {"text": f"{i} {blob}"}))
        slowest = max(slowest, time.perf_counter() - began)
    during = _statuses(get_settings().fallback_spool)
    assert during.get("completed", 0) >= 300, during  # the runners kept their turns during the burst
    assert slowest < get_settings().fallback_enqueue_wait, slowest
    live = ("pending", "delayed", "retrying", "running", "handing")  # finished rows past KEEP_BYTES are pruned
    wait_until(lambda: not any(_statuses(get_settings().fallback_spool).get(s) for s in live), timeout=240,
               interval=0.5, message="every job of the burst ended")
    assert set(_statuses(get_settings().fallback_spool)) == {"completed"}
    assert not [r.getMessage() for r in caplog.records if "runner failed" in r.getMessage()
                or "could not write its end" in r.getMessage()]
    assert get_job(ids[-1]).result == f"1499 {blob}"


def test_an_end_is_retried_until_written_while_another_writer_holds_the_spool(jobs_env, monkeypatch, caplog,
                                                                              tmp_path):
    """A runner finishes while another process's writer holds the spool's lock longer than one try
    waits (END_WAIT): the end is logged as not written, tried again, and written once the lock is
    free; the job completes once, it is not left to its lease."""
    _redis_down(monkeypatch, JOBS_FALLBACK_WORKERS="1")
    caplog.set_level(logging.WARNING, logger="core.fallback.executor")
    marks = tmp_path / "marks.txt"
    job_id = email_queue.enqueue_job("file_mark", {"path": str(marks), "item": "once", "seconds": 1.0})
    spool_path = get_settings().fallback_spool
    wait_until(lambda: _statuses(spool_path).get("running") == 1, timeout=10, message="the job to start")
    holder = sqlite3.connect(spool_path, timeout=10, isolation_level=None)  # another writer, as another process
    holder.execute("BEGIN IMMEDIATE")
    try:
        wait_until(lambda: any("could not write its end" in r.getMessage() for r in caplog.records),
                   timeout=fallback_executor.END_WAIT + 10, message="a failed try to write the end")
        assert get_fallback().end_retries >= 1
        time.sleep(1.0)
    finally:
        holder.execute("COMMIT")
        holder.close()
    wait_until(lambda: get_job(job_id).status == JobStatus.COMPLETED, timeout=30, message="the end written")
    assert get_job(job_id).stalls == 0 and get_job(job_id).retry_count == 0
    assert marks.read_text().split() == ["once"]  # one run: the end was not left to the lease


def test_an_enqueue_that_cannot_get_the_spool_in_time_is_a_503_with_the_reason(api_env, monkeypatch):
    _redis_down(monkeypatch, JOBS_FALLBACK_ENQUEUE_WAIT="0.3")
    email_queue.enqueue_job("add", {"a": 1, "b": 2}, delay=60)  # the spool file exists
    holder = sqlite3.connect(get_settings().fallback_spool, timeout=10, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, and not letting go
    try:
        began = time.monotonic()
        with pytest.raises(QueueUnavailableError, match="stayed busy for 0.3s") as raised:
            email_queue.enqueue_job("add", {"a": 1, "b": 2})
        assert time.monotonic() - began < 2.0
        assert "JOBS_FALLBACK_ENQUEUE_WAIT" in str(raised.value) and raised.value.http_status == 503
        from app import create_app

        answer = create_app().test_client().post("/api/jobs/ai/trigger", json={"prompt": "hi", "user_id": "u1"},
                                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert "stayed busy" in answer.get_json()["error"]["message"]
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert email_queue.enqueue_job("add", {"a": 1, "b": 2}, delay=60)  # free again: accepted


def test_an_enqueue_behind_this_processs_own_writers_is_bounded_too(jobs_env, monkeypatch):
    """The bound covers the wait for this process's turn as well as SQLite's lock."""
    _redis_down(monkeypatch, JOBS_FALLBACK_ENQUEUE_WAIT="0.2")
    spool = Spool()
    spool.add(_job("first"), time.time() + 60, 1, None, 100)
    entered, release = threading.Event(), threading.Event()

    def long_write(db) -> None:
        entered.set()
        release.wait(10)

    writer = threading.Thread(target=spool._write, args=(long_write,))
    writer.start()
    try:
        entered.wait(5)
        with pytest.raises(QueueUnavailableError, match="other threads of this process"):
            email_queue.enqueue_job("add", {"a": 1, "b": 2})
    finally:
        release.set()
        writer.join(10)
