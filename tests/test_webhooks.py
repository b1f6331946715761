"""Outbound webhooks: validation, signed delivery by real workers to a loopback receiver, retries
on 5xx and none on 4xx, attempts recorded, and a dispatcher that never makes two delivery jobs
for one (webhook, event) — with two dispatchers at once and a dead one's entries taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.config import reload_settings
from core.events import webhooks
from core.events.webhooks import (
    DELIVERY_TASK,
    InvalidWebhookError,
    WebhookNotFoundError,
    delivery_job_id,
    register_webhook,
    run_dispatcher_once,
    start_dispatcher,
    verify_signature,
)
from core.platform import keys
from core.platform.connection import get_redis, new_redis
from tests.conftest import ADMIN_TOKEN, finished
from tests.servers import ROOT, wait_until, worker_env

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Receiver:
    """A loopback HTTP receiver: records raw bodies and headers; answers per path from a script
    of statuses (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: dict[str, deque[int]] = defaultdict(deque)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                queue = receiver.script[self.path]
                status = queue.popleft() if queue else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    peer = Receiver()
    yield peer
    peer.stop()


@pytest.fixture
def dispatcher(jobs_env):
    """The dispatcher thread a worker process runs (core/worker/loop.py starts it), here in the test."""
    running = start_dispatcher("test-dispatcher", block_ms=200)
    yield running
    running.stop()


# --- registration -------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"url": "ftp://example.com/x"}, "scheme 'ftp'"),
    ({"url": "example.com/hook"}, "accepted: an absolute http:// or https:// URL"),
    ({"url": "http://"}, "host None"),
    ({"url": "http://a b.com/"}, "no spaces"),
    ({"url": "https://example.com:99999/"}, "out of range"),
    ({"url": "https://example.com/" + "x" * 2050}, "at most 2048 characters"),
    ({"url": "https://example.com/", "secret": "short"}, "16-256 printable characters"),
    ({"url": "https://example.com/", "events": ["finished"]}, "unknown event 'finished'"),
    ({"url": "https://example.com/", "tasks": "send_email"}, "tasks must be a list"),
    ({"url": "https://example.com/", "tasks": []}, "tasks must list 1-100 values"),
    ({"url": "https://example.com/", "users": ["a b"]}, "malformed value 'a b' in users"),
])
def test_bad_registrations_name_the_value_and_what_is_accepted(jobs_env, kwargs, message):
    with pytest.raises(InvalidWebhookError, match=message) as caught:
        register_webhook(**kwargs)
    assert caught.value.http_status == 400 and caught.value.code == "invalid_webhook"


def test_register_list_remove(jobs_env):
    hook = register_webhook("https://example.com/hook", tasks=["send_email"], users=[42], events=["failed"])
    assert len(hook["secret"]) == 64 and hook["users"] == ["42"]
    listed = webhooks.list_webhooks()
    assert [h["id"] for h in listed] == [hook["id"]] and listed[0]["secret"] == "..." + hook["secret"][-4:]
    assert webhooks.webhook_attempts(hook["id"]) == []
    webhooks.remove_webhook(hook["id"])
    assert webhooks.list_webhooks() == []
    with pytest.raises(WebhookNotFoundError):
        webhooks.remove_webhook(hook["id"])
    with pytest.raises(InvalidWebhookError, match="16 hex digits"):
        webhooks.get_webhook("../../etc")


def test_http_routes_register_show_list_remove(client):
    made = client.post("/api/jobs/webhooks", headers=ADMIN, json={"url": "https://example.com/h", "events": ["completed"]})
    assert made.status_code == 201, made.data
    hook = made.get_json()["data"]
    assert len(hook["secret"]) == 64
    shown = client.get(f"/api/jobs/webhooks/{hook['id']}", headers=ADMIN).get_json()["data"]
    assert shown["secret"].startswith("...") and shown["events"] == ["completed"]
    assert client.get("/api/jobs/webhooks", headers=ADMIN).get_json()["data"]["webhooks"][0]["id"] == hook["id"]
    attempts = client.get(f"/api/jobs/webhooks/{hook['id']}/attempts", headers=ADMIN)
    assert attempts.get_json()["data"] == {"id": hook["id"], "attempts": []}
    bad = client.post("/api/jobs/webhooks", headers=ADMIN, json={"url": "gopher://x"})
    assert bad.status_code == 400 and "gopher" in bad.get_json()["error"]["message"]
    unknown = client.post("/api/jobs/webhooks", headers=ADMIN, json={"url": "https://x.io", "colour": "red"})
    assert unknown.status_code == 400 and "accepted: url, secret" in unknown.get_json()["error"]["message"]
    assert client.delete(f"/api/jobs/webhooks/{hook['id']}", headers=ADMIN).status_code == 200
    assert client.delete(f"/api/jobs/webhooks/{hook['id']}", headers=ADMIN).status_code == 404
    assert client.get("/api/jobs/webhooks/zz", headers=ADMIN).status_code == 400
    from core.platform.auth import issue_user_token

    user = {"Authorization": f"Bearer {issue_user_token('u1')}"}
    assert client.get("/api/jobs/webhooks", headers=user).status_code == 403


# --- delivery by real workers --------------------------------------------------------------------
def test_signed_delivery_retried_on_500_not_on_4xx_attempts_recorded(jobs_env, start_worker, receiver, dispatcher):
    good = register_webhook(receiver.url("/good"), secret="s" * 32, tasks=["add"], events=["completed"])
    gone = register_webhook(receiver.url("/gone"), secret="t" * 32, tasks=["add"], events=["completed"])
    receiver.script["/good"].append(500)   # the first attempt fails, the retry succeeds
    receiver.script["/gone"].append(410)   # a 4xx other than 429: never retried
    start_worker("email", "crm", "--worker-class", "simple")
    job_id = email_queue.enqueue_job("add", {"a": 2, "b": 3}, user_id="u5")
    finished(job_id)

    good_job = finished(delivery_job_id(good["id"], _completed_entry(job_id)))
    assert good_job.status.value == "completed" and good_job.retry_count == 1
    gone_job = finished(delivery_job_id(gone["id"], _completed_entry(job_id)))
    assert gone_job.status.value == "failed" and gone_job.retry_count == 0
    assert "410" in gone_job.error

    calls = receiver.at("/good")
    assert len(calls) == 2 and len(receiver.at("/gone")) == 1
    for call in calls:
        assert verify_signature("s" * 32, call["body"], call["headers"]["X-Fikiri-Signature"])
        assert not verify_signature("t" * 32, call["body"], call["headers"]["X-Fikiri-Signature"])
    body = json.loads(calls[1]["body"])
    assert body["job_id"] == job_id and body["event"] == "completed" and body["user_id"] == "u5"
    assert body["webhook_id"] == good["id"] and calls[1]["headers"]["X-Fikiri-Event-Id"] == body["id"]
    assert calls[0]["body"] == calls[1]["body"]  # the same event, so the receiver can dedupe on its id

    attempts = webhooks.webhook_attempts(good["id"])
    assert [(a["status"], a["outcome"]) for a in attempts] == [(200, "delivered"), (500, "retry")]
    assert all(a["event"] == "completed" and a["event_id"] == body["id"] and a["duration_ms"] >= 0 for a in attempts)
    assert [(a["status"], a["outcome"]) for a in webhooks.webhook_attempts(gone["id"])] == [(410, "failed")]


def _completed_entry(job_id: str) -> str:
    def find() -> str | None:
        for entry_id, fields in get_redis().xrange(keys.events()):
            if fields[b"job"].decode() == job_id and fields[b"event"] == b"completed":
                return entry_id.decode()
        return None

    return wait_until(find, timeout=10)  # type: ignore[return-value]


def test_a_timeout_is_retried_and_recorded(jobs_env, start_worker, monkeypatch, dispatcher):
    """A receiver that never answers within JOBS_WEBHOOK_TIMEOUT: the attempt is a retry."""
    import socket

    monkeypatch.setenv("JOBS_WEBHOOK_MAX_RETRIES", "1")  # read by the dispatcher when it enqueues
    reload_settings()

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    hook = register_webhook(f"http://127.0.0.1:{silent.getsockname()[1]}/slow", tasks=["add"], events=["completed"])
    start_worker("email", "crm", "--worker-class", "simple", env={"JOBS_WEBHOOK_TIMEOUT": "0.3"})
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    finished(job_id)
    attempts = wait_until(lambda: len(webhooks.webhook_attempts(hook["id"])) >= 2 and webhooks.webhook_attempts(hook["id"]),
                          timeout=30)
    assert len(attempts) == 2
    assert finished(delivery_job_id(hook["id"], _completed_entry(job_id))).status.value == "failed"
    assert all(a["status"] is None and a["outcome"] == "retry" and "Timeout" in a["error"] for a in attempts)
    silent.close()


# --- the dispatcher --------------------------------------------------------------------------------
def _delivery_jobs_made() -> int:
    return int(get_redis().hget(keys.queue_counters("crm"), f"{DELIVERY_TASK}:enqueued") or 0)


def test_two_dispatchers_and_a_dead_one_never_make_two_jobs_for_one_event(jobs_env, monkeypatch):
    monkeypatch.setenv("JOBS_WEBHOOK_CLAIM_IDLE", "0.2")
    reload_settings()
    hooks = [register_webhook(f"https://example.com/{i}", tasks=["add"]) for i in range(2)]
    connection = get_redis()
    entries = [connection.xadd(keys.events(), {"job": f"j{i}", "event": "completed", "queue": "email",
                                               "task": "add"}).decode() for i in range(60)]
    connection.xadd(keys.events(), {"job": "d", "event": "completed", "queue": "crm", "task": DELIVERY_TASK})
    connection.xadd(keys.events(), {"job": "o", "event": "completed", "queue": "email", "task": "other"})

    # A dispatcher reads 10 entries, enqueues the deliveries of 5 of them, and dies before its ack.
    dead = connection.xreadgroup(keys.webhook_group(), "dead", {keys.events(): ">"}, count=10)[0][1]
    for entry_id, fields in dead[:5]:
        from core.events.stream import to_event

        event = to_event(entry_id, fields)
        for hook in hooks:
            job_id = delivery_job_id(hook["id"], event["id"])
            webhooks.delivery_queue().enqueue_job(DELIVERY_TASK, {"webhook_id": hook["id"], "event": event},
                                                  job_id=job_id, unique_for=3600, unique_key=job_id)
    made_by_dead = _delivery_jobs_made()
    assert made_by_dead == 10

    # Two live dispatchers at once, each with its own connection, until every entry is acknowledged.
    errors: list[BaseException] = []
    claimed: list[int] = []

    def all_acknowledged(own: Any) -> bool:
        # the delivery jobs' own "enqueued" events keep coming in too (and are skipped): done
        # when the group has read everything (lag 0) and acknowledged it all
        group = own.xinfo_groups(keys.events())[0]
        return group["lag"] == 0 and group["pending"] == 0

    def serve(name: str) -> None:
        own = new_redis(socket_timeout=5)
        try:
            for _ in range(200):
                claimed.append(run_dispatcher_once(own, name, block_ms=50, count=7)["claimed"])
                if all_acknowledged(own):
                    break
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=serve, args=(name,)) for name in ("live-1", "live-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sum(claimed) >= 10  # the dead dispatcher's entries were taken over (XAUTOCLAIM)
    assert connection.xpending(keys.events(), keys.webhook_group())["pending"] == 0
    assert _delivery_jobs_made() == 2 * 60  # one per (webhook, event): none twice, none lost, none for others
    for hook in hooks:
        for entry_id in entries:
            job = get_job(delivery_job_id(hook["id"], entry_id))
            assert job is not None and job.task_name == DELIVERY_TASK

    # Running again finds nothing new.
    assert run_dispatcher_once(connection, "live-1", block_ms=10)["deliveries"] == 0
    assert _delivery_jobs_made() == 120


def test_a_webhook_gets_only_events_after_its_registration(jobs_env):
    connection = get_redis()
    webhooks.ensure_group(connection)
    connection.xadd(keys.events(), {"job": "early", "event": "completed", "queue": "email", "task": "add"})
    import time

    time.sleep(0.01)
    register_webhook("https://example.com/late")
    connection.xadd(keys.events(), {"job": "late", "event": "completed", "queue": "email", "task": "add"})
    assert run_dispatcher_once(connection, "c1", block_ms=10)["deliveries"] == 1


# --- CLI -----------------------------------------------------------------------------------------------
def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.jobs", *args], cwd=ROOT, env=worker_env(redis_url),
                          capture_output=True, text=True, timeout=60)


def test_cli_webhooks_add_list_attempts_remove(jobs_env):
    made = cli(jobs_env.url, "--json", "webhooks", "add", "https://example.com/cli", "--task", "add,send_email",
               "--event", "failed", "--event", "completed")
    assert made.returncode == 0, made.stderr
    hook = json.loads(made.stdout)
    assert hook["tasks"] == ["add", "send_email"] and hook["events"] == ["completed", "failed"]
    listed = cli(jobs_env.url, "webhooks", "list")
    assert hook["id"] in listed.stdout and "https://example.com/cli" in listed.stdout
    assert hook["secret"] not in listed.stdout
    assert json.loads(cli(jobs_env.url, "--json", "webhooks", "attempts", hook["id"]).stdout) == []
    bad = cli(jobs_env.url, "webhooks", "add", "file:///etc/passwd")
    assert bad.returncode == 2 and "scheme 'file'" in bad.stderr
    assert cli(jobs_env.url, "webhooks", "remove", hook["id"]).returncode == 0
    missing = cli(jobs_env.url, "webhooks", "remove", hook["id"])
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_http_attempts_route_over_gunicorn(api_server):
    made = requests.post(api_server.url("/api/jobs/webhooks"), headers=ADMIN, json={"url": "http://127.0.0.1:9/x"},
                         timeout=5)
    assert made.status_code == 201
    hook_id = made.json()["data"]["id"]
    got = requests.get(api_server.url(f"/api/jobs/webhooks/{hook_id}/attempts?limit=0"), headers=ADMIN, timeout=5)
    assert got.status_code == 400


def test_the_readme_verification_snippet_accepts_our_signature_and_refuses_tampering():
    """The receiver code in README "Live events and webhooks", run as written."""
    import re
    import time

    from core.events.webhooks import sign

    readme = (ROOT / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 - our own README
    verify = namespace["verify"]
    body = b'{"event":"completed","job_id":"abc"}'
    header = sign("k" * 32, body, int(time.time()))
    assert verify("k" * 32, body, header)
    assert not verify("k" * 32, body + b" ", header)
    assert not verify("x" * 32, body, header)
    assert not verify("k" * 32, body, sign("k" * 32, body, int(time.time()) - 3600))
    assert not verify("k" * 32, body, "garbage")
