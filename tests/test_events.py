"""Live events: listen_events over the lifecycle stream, and the SSE routes under real gunicorn
with real workers (every transition, in order; resume with Last-Event-ID; auth; bounds)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from core.api.queues import email_queue
from core.events.stream import InvalidEventIdError, listen_events, parse_event_id
from core.platform import keys
from core.platform.auth import issue_user_token
from core.platform.connection import get_redis
from tests.api_server import ApiServer
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, finished

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def user(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_user_token(user_id)}"}


class Sse:
    """A minimal SSE client over requests: messages as ``{"id", "data"}``, comments kept aside."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 15) -> None:
        self.response = requests.get(url, headers=headers, stream=True, timeout=(5, timeout))
        self.comments: list[str] = []
        self.retry: int | None = None
        self._lines = self.response.iter_lines(chunk_size=1, decode_unicode=True)

    def messages(self) -> Iterator[dict[str, Any]]:
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if "data" in fields:
                    yield {"id": fields.get("id"), "data": json.loads(fields["data"])}
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                if name == "retry":
                    self.retry = int(value.strip())
                else:
                    fields[name] = value.removeprefix(" ")

    def until(self, event: str) -> list[dict[str, Any]]:
        seen = []
        for message in self.messages():
            seen.append(message)
            if message["data"]["event"] == event:
                return seen
        raise AssertionError(f"stream ended before {event!r}; saw {[m['data']['event'] for m in seen]}")

    def close(self) -> None:
        self.response.close()


def xadd(job: str, event: str, **fields: str) -> str:
    entry = {"job": job, "event": event, "queue": fields.pop("queue", "email"),
             "task": fields.pop("task", "add"), **fields}
    return get_redis().xadd(keys.events(), entry).decode()


# --- the reader ------------------------------------------------------------------------------------
def test_listen_events_filters_in_order_and_resumes_after_an_id(jobs_env):
    first = xadd("a", "enqueued", user="7")
    xadd("b", "enqueued", user="8", queue="ai", task="ai_echo")
    started = xadd("a", "started", user="7")
    xadd("a", "progress", user="7", detail='{"done": 1}')
    xadd("a", "failed", user="7", detail="ValueError: boom")

    events = list(listen_events(job_id="a", last_id="0", timeout=0.3, block_ms=100))
    assert [e["event"] for e in events] == ["enqueued", "started", "progress", "failed"]
    assert events[0] == {"id": first, "job_id": "a", "event": "enqueued", "status": "pending", "queue": "email",
                         "task_name": "add", "user_id": "7", "at": int(first.split("-")[0]) / 1000}
    assert events[2]["progress"] == {"done": 1} and events[3]["error"] == "ValueError: boom"
    assert events[3]["status"] == "failed"

    resumed = list(listen_events(job_id="a", last_id=started, timeout=0.3, block_ms=100))
    assert [e["event"] for e in resumed] == ["progress", "failed"]
    assert [e["job_id"] for e in listen_events(user_id="8", last_id="0", timeout=0.2, block_ms=100)] == ["b"]
    assert [e["job_id"] for e in listen_events(queue="ai", last_id="0", timeout=0.2, block_ms=100)] == ["b"]
    assert len(list(listen_events(task="add", last_id="0", timeout=0.2, block_ms=100))) == 4


def test_a_live_listener_misses_nothing_added_between_its_reads(jobs_env):
    """Entries come while the listener is between two blocking reads (50 ms each): none is lost."""
    import threading

    def produce() -> None:
        time.sleep(0.2)
        for index in range(5):
            xadd("x", "progress", detail=str(index))
            time.sleep(0.12)

    xadd("x", "enqueued")  # before the listener starts: not for a listener of new events
    listener = listen_events(block_ms=50, timeout=5)
    producer = threading.Thread(target=produce)
    got: list[dict] = []
    producer.start()
    for event in listener:
        got.append(event)
        if len(got) == 5:
            break
    listener.close()
    producer.join()
    assert [e.get("detail") for e in got] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("bad", ["abc", "12-x", "-1", "1-2-3", " 12", "9" * 21, "18446744073709551616-0", ""])
def test_malformed_ids_are_refused_naming_the_form(jobs_env, bad):
    with pytest.raises(InvalidEventIdError, match="milliseconds"):
        parse_event_id(bad)
    with pytest.raises(InvalidEventIdError):
        listen_events(last_id=bad)


def test_ids_are_normalised():
    assert parse_event_id("1712345678901") == "1712345678901-0"
    assert parse_event_id("0") == "0-0" and parse_event_id("$") == "$"


def test_a_jobs_listener_replays_only_its_current_run(jobs_env):
    """A caller's job id run again after its end: the replay starts at the new run's enqueued."""
    job_id = f"rerun-{uuid.uuid4().hex[:6]}"
    xadd(job_id, "enqueued")
    old_end = xadd(job_id, "completed")  # an earlier run, a second before this one
    email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id=job_id)   # the script writes "enqueued"
    events = list(listen_events(job_id=job_id, timeout=0.2, block_ms=100))
    assert [e["event"] for e in events] == ["enqueued"]
    assert tuple(map(int, events[0]["id"].split("-"))) > tuple(map(int, old_end.split("-")))


# --- SSE under gunicorn, with real workers ---------------------------------------------------------
def test_sse_sees_every_transition_in_order_and_resumes_without_gaps_or_repeats(api_server, start_worker):
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 1.0, "key": "test:sse"}, user_id="u1")
    stream = Sse(api_server.url(f"/api/jobs/{job_id}/events"), user("u1"))
    assert stream.response.status_code == 200
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.response.headers["Cache-Control"] == "no-cache"
    start_worker("email", "--worker-class", "simple")
    first = stream.until("started")
    assert stream.retry == 3000
    stream.close()  # the client goes away while the job runs

    resumed = Sse(api_server.url(f"/api/jobs/{job_id}/events"), {**user("u1"), "Last-Event-ID": first[-1]["id"]})
    rest = resumed.until("completed")
    resumed.close()
    seen = first + rest
    assert [m["data"]["event"] for m in seen] == ["enqueued", "started", "completed"]
    ids = [m["id"] for m in seen]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == 3
    assert all(m["id"] == m["data"]["id"] and m["data"]["job_id"] == job_id for m in seen)
    assert [m["data"]["status"] for m in seen] == ["pending", "running", "completed"]
    assert finished(job_id).status.value == "completed"


def test_the_python_listener_sees_a_real_run(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("with_progress", {"steps": 2})
    start_worker("email", "--worker-class", "simple")
    got = []
    for event in listen_events(job_id=job_id, timeout=20, block_ms=200):
        got.append(event)
        if event["status"] in ("completed", "failed", "canceled"):
            break
    assert [e["event"] for e in got] == ["enqueued", "started", "progress", "progress", "completed"]
    assert [e["progress"] for e in got if e["event"] == "progress"] == [{"done": 1, "total": 2},
                                                                        {"done": 2, "total": 2}]
    assert [e["status"] for e in got] == ["pending", "running", "running", "running", "completed"]


def test_the_admin_stream_filters_and_resumes(api_server, start_worker):
    start = get_redis().xrevrange(keys.events(), count=1)
    after = start[0][0].decode() if start else "0"
    email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="u1")
    email_queue.enqueue_job("add", {"a": 2, "b": 2}, user_id="u2")
    stream = Sse(api_server.url("/api/jobs/events?user=u2&queue=email"), {**ADMIN, "Last-Event-ID": after})
    start_worker("email", "--worker-class", "simple")
    seen = stream.until("completed")
    stream.close()
    assert {m["data"]["user_id"] for m in seen} == {"u2"}
    assert [m["data"]["event"] for m in seen] == ["enqueued", "started", "completed"]


# --- auth, precedence, bad input ---------------------------------------------------------------------
def test_users_see_only_their_own_jobs_events_and_never_the_admin_stream(api_server):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="owner")
    other = requests.get(api_server.url(f"/api/jobs/{job_id}/events"), headers=user("intruder"), timeout=5)
    missing = requests.get(api_server.url("/api/jobs/no-such-job/events"), headers=user("intruder"), timeout=5)
    assert other.status_code == missing.status_code == 404
    assert other.json()["error"]["message"] == f"Job {job_id} does not exist"
    admin_stream = requests.get(api_server.url("/api/jobs/events"), headers=user("owner"), timeout=5)
    assert admin_stream.status_code == 403 and admin_stream.json()["error"]["code"] == "forbidden"
    assert requests.get(api_server.url("/api/jobs/events"), timeout=5).status_code == 401


def test_events_is_the_admin_stream_not_a_job_named_events(api_server):
    """Static segments win over <job_id> whatever the registration order (Werkzeug's matcher)."""
    email_queue.enqueue_job("add", {"a": 1, "b": 1}, job_id="events", user_id="u1")
    assert requests.get(api_server.url("/api/jobs/events"), headers=user("u1"), timeout=5).status_code == 403
    stream = Sse(api_server.url("/api/jobs/events/events"), user("u1"))
    assert stream.response.status_code == 200
    assert next(stream.messages())["data"]["job_id"] == "events"
    stream.close()


@pytest.mark.parametrize("header", ["abc", "1-2-3", "12-", "1.5"])
def test_a_malformed_last_event_id_is_a_400_saying_what_is_expected(client, header):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    for path in (f"/api/jobs/{job_id}/events", "/api/jobs/events"):
        response = client.get(path, headers={**ADMIN, "Last-Event-ID": header})
        assert response.status_code == 400, response.data
        assert response.get_json()["error"]["code"] == "invalid_event_id"
        assert "'<milliseconds>-<sequence>'" in response.get_json()["error"]["message"]
    response = client.get("/api/jobs/events?last_event_id=nope", headers=ADMIN)
    assert response.status_code == 400


def test_bad_filters_are_400(client):
    assert client.get("/api/jobs/events?queue=mail", headers=ADMIN).status_code == 400
    assert client.get("/api/jobs/events?user=a%20b", headers=ADMIN).status_code == 400
    assert client.get("/api/jobs/events?task=" + "x" * 300, headers=ADMIN).status_code == 400


# --- bounds: lifetime, heartbeats, streams per process --------------------------------------------------
@pytest.fixture
def bounded_server(api_env, tmp_path) -> Iterator[ApiServer]:
    """One gunicorn process with 4 threads, at most 1 stream, 1.5 s lifetime, 0.3 s heartbeats."""
    server = ApiServer(api_env.url, {"JOBS_ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": SECRET_KEY,
                                     "JOBS_EVENTS_MAX_STREAMS": "1", "JOBS_EVENTS_STREAM_MAX_SECONDS": "1.5",
                                     "JOBS_EVENTS_HEARTBEAT": "0.3", "JOBS_EVENTS_RETRY_MS": "1500"},
                       tmp_path / "bounded.log", workers=1)
    yield server
    server.stop()


def test_a_stream_beats_ends_on_time_and_leaves_threads_for_other_requests(bounded_server):
    started = time.monotonic()
    stream = Sse(bounded_server.url("/api/jobs/events"), ADMIN)
    assert stream.response.status_code == 200
    busy = requests.get(bounded_server.url("/api/jobs/events"), headers=ADMIN, timeout=5)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert "JOBS_EVENTS_MAX_STREAMS" in busy.json()["error"]["message"]
    quick = time.monotonic()
    assert requests.get(bounded_server.url("/api/jobs/queues/stats"), headers=ADMIN, timeout=5).status_code == 200
    assert time.monotonic() - quick < 1.0
    assert list(stream.messages()) == []  # nothing happened; the server ends the stream itself
    lasted = time.monotonic() - started
    assert 1.4 <= lasted < 5, lasted
    assert stream.retry == 1500
    assert stream.comments.count("keep-alive") >= 2
    assert "reconnect with Last-Event-ID" in stream.comments[-1]
    # the slot came back when the stream ended
    again = requests.get(bounded_server.url("/api/jobs/events"), headers=ADMIN, timeout=5, stream=True)
    assert again.status_code == 200
    again.close()


def test_a_client_that_leaves_gives_its_slot_back(bounded_server):
    stream = Sse(bounded_server.url("/api/jobs/events"), ADMIN)
    assert stream.response.status_code == 200
    stream.close()

    def slot_free() -> bool:
        response = requests.get(bounded_server.url("/api/jobs/events"), headers=ADMIN, timeout=5, stream=True)
        response.close()
        return response.status_code == 200

    from tests.servers import wait_until

    wait_until(slot_free, timeout=5, interval=0.2, message="the slot of a closed stream to come back")
