"""Tracing and error reporting with the real SDKs: the enqueue span's trace context travels in
the job's meta through Redis to another process, whose span joins the same trace (OpenTelemetry
SDK, in-memory exporter); a task failure reaches a loopback HTTP receiver acting as the Sentry
DSN, tagged with job id, queue and task."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.platform import tracing
from tests.servers import ROOT, worker_env

pytest.importorskip("opentelemetry.sdk")


def probe(redis_url: str, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "tests.tracing_probe", *args], cwd=str(ROOT),
                          env=worker_env(redis_url, env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_the_worker_span_joins_the_enqueue_span_across_processes(jobs_env):
    lines = probe(jobs_env.url, "enqueue")
    job_id = next(line["job_id"] for line in lines if "job_id" in line)
    (enqueue,) = [line for line in lines if "name" in line]
    assert (enqueue["name"], enqueue["kind"]) == ("enqueue add", "PRODUCER")
    assert enqueue["attributes"]["messaging.message.id"] == job_id
    (run,) = probe(jobs_env.url, "run", job_id)
    assert (run["name"], run["kind"]) == ("run add", "CONSUMER")
    assert run["trace_id"] == enqueue["trace_id"] and run["parent"] == enqueue["span_id"]


def test_without_opentelemetry_switched_on_nothing_is_added(monkeypatch):
    from core.config import reload_settings

    monkeypatch.setenv("JOBS_OTEL_ENABLED", "0")
    reload_settings()
    try:
        with tracing.enqueue_span("add", "email") as carrier:
            assert carrier == {}
        with tracing.job_span({"otel": {"traceparent": "garbage"}}, "add", "email", "j1"):
            pass
    finally:
        monkeypatch.delenv("JOBS_OTEL_ENABLED")
        reload_settings()


class _Receiver(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_a_task_failure_reaches_sentry_tagged_with_job_queue_and_task(jobs_env):
    pytest.importorskip("sentry_sdk")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
        (span,) = probe(jobs_env.url, "fail", env={"SENTRY_DSN": dsn})
        assert span["status"] == "ERROR"
    finally:
        server.shutdown()
    events = [json.loads(line) for body in _Receiver.received for line in body.splitlines()
              if line.startswith(b"{") and b'"exception"' in line]
    assert events, _Receiver.received
    event = events[0]
    assert event["tags"] == {"job_id": "job-that-fails-1", "queue": "email", "task": "explode"}
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    assert event["exception"]["values"][-1]["value"] == "the task broke"
