"""Every lifecycle transition reaches the events stream, in order, written by the same script
that made the transition (real Redis, real worker processes)."""

from __future__ import annotations

import time

from core.api.jobs import stop_job
from core.api.queues import email_queue
from core.config import get_settings
from core.platform import keys
from core.platform.connection import get_redis
from core.queue.job_model import JobStatus
from tests.conftest import finished
from tests.servers import wait_until


def _events(job_id: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for _entry_id, fields in get_redis().xrange(keys.events()):
        data = {k.decode(): v.decode() for k, v in fields.items()}
        if data["job"] == job_id:
            out.append((data["event"], data))
    return out


def _names(job_id: str) -> list[str]:
    return [name for name, _data in _events(job_id)]


def test_a_job_that_completes_is_enqueued_started_completed_with_queue_task_and_user(start_worker):
    start_worker("email", "--worker-class", "simple")
    job_id = email_queue.enqueue_job("with_progress", {"steps": 2}, user_id="u7")
    finished(job_id)
    events = _events(job_id)
    assert [name for name, _ in events] == ["enqueued", "started", "progress", "progress", "completed"]
    assert all(d["queue"] == "email" and d["task"] == "with_progress" and d["user"] == "u7" for _, d in events)
    assert events[3][1]["detail"] == '{"done": 2, "total": 2}'


def test_retries_parking_deferral_cancel_and_stop_each_leave_their_event(start_worker):
    start_worker("email", "--worker-class", "threaded", "--concurrency", "2", env={"JOBS_STOP_GRACE": "1"})
    failing = email_queue.enqueue_job("fail_times", {"key": "test:ft", "times": 1}, max_retries=1)
    assert finished(failing, timeout=20).status == JobStatus.COMPLETED
    assert _names(failing) == ["enqueued", "started", "retrying", "pending", "started", "completed"]
    assert _events(failing)[2][1]["detail"] == "RuntimeError: planned failure 1 of 1"

    first = email_queue.enqueue_job("exclusive", {"key": "test:x", "user": "z", "seconds": 0.5})
    second = email_queue.enqueue_job("exclusive", {"key": "test:x", "user": "z", "seconds": 0})
    finished(second, timeout=20)
    assert _names(first) == ["enqueued", "started", "completed"]
    assert _names(second) == ["enqueued", "parked", "released", "started", "completed"]
    assert _events(second)[1][1]["detail"] == "concurrency limited: sync:z (at most 1 running)"

    delayed = email_queue.enqueue_job("add", {"a": 1, "b": 2}, delay=60)
    email_queue.cancel_job(delayed)
    assert _names(delayed) == ["delayed", "canceled"]

    running = email_queue.enqueue_job("stoppable", {"key": "test:st", "seconds": 20})
    wait_until(lambda: get_redis().get("test:st:runs") == b"1", timeout=10)
    stop_job(running, by="ops")
    finished(running, timeout=10)
    assert _names(running) == ["enqueued", "started", "stopping", "canceled"]
    assert _events(running)[-1][1]["detail"] == "stopped by ops"


def test_the_stream_is_bounded_and_a_maxlen_of_0_writes_nothing(jobs_env, monkeypatch):
    email_queue.enqueue_many("add", [{"a": i, "b": 0} for i in range(300)])
    assert get_redis().xlen(keys.events()) == 300
    monkeypatch.setenv("JOBS_EVENTS_MAXLEN", "100")
    from core.config import reload_settings

    reload_settings()
    assert get_settings().events_maxlen == 100
    email_queue.enqueue_many("add", [{"a": i, "b": 0} for i in range(300)])
    assert 100 <= get_redis().xlen(keys.events()) < 300  # MAXLEN ~: trimmed by whole radix nodes
    monkeypatch.setenv("JOBS_EVENTS_MAXLEN", "0")
    reload_settings()
    before = get_redis().xlen(keys.events())
    email_queue.enqueue_job("add", {"a": 1, "b": 1})
    time.sleep(0.05)
    assert get_redis().xlen(keys.events()) == before
