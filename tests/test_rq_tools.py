"""RQ's own tools, from PyPI, run as real processes against a Redis holding our jobs in every state.

``rq info`` (the installed RQ's CLI), rq-dashboard (its JSON endpoints, with its ``--json`` option:
our jobs are JSON, and its default pickle serializer cannot read them) and rq-exporter (its
``/metrics``) must show every queue, with its counts, our results and errors, and each job's
``enqueued_at`` and ``description`` (issue 19). Versions are pinned in requirements-dev.txt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port, wait_until

BIN = Path(sys.executable).parent


@dataclass
class Jobs:
    """Ids of the jobs in each state (see the ``every_state`` fixture)."""

    completed: str
    failed: str
    pending: list[str]
    delayed: str
    canceled: str
    running: str
    crm_pending: str


def _build_states(start_worker, live_worker: bool) -> tuple[Jobs, object]:
    """email: 4 pending, 1 delayed, 1 canceled, 1 completed with a result, 1 failed with an error
    (run by a worker that has stopped since); ai: 1 running; crm: 1 pending on a queue no worker
    ever served. The running job is in a live worker process (``live_worker``), or claimed through
    the lifecycle's claim script by a worker that registered nowhere."""
    from core.api.queues import ai_queue, crm_queue, email_queue
    from core.platform.connection import get_redis
    from core.queue import lifecycle
    from tests.conftest import finished

    completed = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    failed = email_queue.enqueue_job("always_fail", {"message": "smtp said no"})
    worker = start_worker("email", "--worker-class", "simple")
    assert finished(completed).result == 5 and finished(failed).status.value == "failed"
    worker.stop()
    pending = [email_queue.enqueue_job("add", {"a": i, "b": i}) for i in range(4)]
    delayed = email_queue.enqueue_job("add", {"a": 9, "b": 9}, delay=3600)
    canceled = email_queue.enqueue_job("add", {"a": 8, "b": 8})
    email_queue.cancel_job(canceled)
    running = ai_queue.enqueue_job("ai_mark_done", {"key": "tools", "item": "long", "seconds": 120})
    busy = None
    if live_worker:
        busy = start_worker("ai", "--worker-class", "simple")
    else:
        lifecycle.claim(get_redis(), "unregistered", "c", [ai_queue.name], 1, 3600)
    wait_until(lambda: ai_queue.get_job_status(running).status.value == "running", timeout=30)
    crm_pending = crm_queue.enqueue_job("crm_echo", {"text": "never served"})
    return Jobs(completed, failed, pending, delayed, canceled, running, crm_pending), busy


@pytest.fixture
def every_state(start_worker) -> Iterator[Jobs]:
    """Our jobs in every state, the running one in a live worker process."""
    jobs, busy = _build_states(start_worker, live_worker=True)
    yield jobs
    busy.kill_hard()  # its job sleeps 120 s; a warm stop would wait for it


@pytest.fixture
def every_state_no_live_worker(start_worker) -> Jobs:
    """The same states with no worker of ours alive (see test_rq_tools_list_our_live_workers)."""
    return _build_states(start_worker, live_worker=False)[0]


class Tool:
    """A tool's process, in its own session; stopped by its own pid."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _serve(argv: list[str], base: str, path: str, log_path: Path) -> Tool:
    tool = Tool(argv, log_path)
    wait_until(lambda: _get(base + path)[0] == 200 or tool.proc.poll() is not None, timeout=30,
               message=f"{argv[0]} answering")
    assert tool.proc.poll() is None, f"{argv[0]} exited:\n{tool.log()}"
    return tool


def test_rq_info_lists_every_queue_with_its_counts(every_state: Jobs, jobs_env):
    out = subprocess.run([str(BIN / "rq"), "info", "--url", jobs_env.url, "--only-queues"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # "fikiri:email |████ 4, 0 executing, 1 finished, 1 failed"
    rows = {name: tuple(map(int, counts)) for name, *counts in re.findall(
        r"^(\S+)\s+\|\S* (\d+), (\d+) executing, (\d+) finished, (\d+) failed$", out.stdout, re.M)}
    assert rows == {"fikiri:email": (4, 0, 1, 1), "fikiri:ai": (0, 1, 0, 0), "fikiri:crm": (1, 0, 0, 0)}, out.stdout
    assert "3 queues, 5 jobs total" in out.stdout

    full = subprocess.run([str(BIN / "rq"), "info", "--url", jobs_env.url], capture_output=True, text=True,
                          timeout=60)
    assert full.returncode == 0, full.stderr
    print(full.stdout)


def test_rq_info_by_queue_counts_every_registry(every_state: Jobs, jobs_env):
    """RQ's own Queue and registry classes, as ``rq info`` and every RQ tool use them."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    client = jobs_env.client()
    email = Queue("fikiri:email", connection=client, serializer=JSONSerializer)
    assert email.count == 4
    assert email.scheduled_job_registry.get_job_ids() == [every_state.delayed]
    assert email.finished_job_registry.get_job_ids() == [every_state.completed]
    assert email.failed_job_registry.get_job_ids() == [every_state.failed]
    assert email.canceled_job_registry.get_job_ids() == [every_state.canceled]
    ai = Queue("fikiri:ai", connection=client, serializer=JSONSerializer)
    assert [job_id.split(":")[0] for job_id in ai.started_job_registry.get_job_ids()] == [every_state.running]


def test_rq_dashboard_shows_results_errors_and_times(every_state: Jobs, jobs_env, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = _serve([str(BIN / "rq-dashboard"), "--redis-url", jobs_env.url, "--bind", "127.0.0.1", "--port",
                        str(port), "--json"], base, "/0/data/queues.json", tmp_path / "rq-dashboard.log")
    try:
        def data(path: str):
            status, body = _get(base + path)
            assert status == 200, f"{path}: {status} {body[:500]!r}\n{dashboard.log()[-3000:]}"
            return json.loads(body)

        queues = {q["name"]: q for q in data("/0/data/queues.json")["queues"]}
        assert set(queues) == {"fikiri:email", "fikiri:ai", "fikiri:crm"}
        email = queues["fikiri:email"]
        assert (email["count"], email["finished_job_registry_count"], email["failed_job_registry_count"],
                email["canceled_job_registry_count"], email["scheduled_job_registry_count"]) == (4, 1, 1, 1, 1)
        assert queues["fikiri:ai"]["started_job_registry_count"] == 1
        assert queues["fikiri:crm"]["count"] == 1

        def listed(registry: str) -> list[dict]:
            return data(f"/0/data/jobs/fikiri:email/{registry}/8/asc/1.json")["jobs"]

        [failed] = listed("failed")
        assert failed["id"] == every_state.failed and "smtp said no" in failed["exc_info"]
        assert failed["description"] == "always_fail(message='smtp said no')"
        [completed] = listed("finished")
        assert completed["description"] == "add(a=2, b=3)" and completed["exc_info"] is None
        assert [j["id"] for j in listed("queued")] == every_state.pending
        assert all(j["description"] for j in listed("queued"))
        assert [j["id"] for j in listed("scheduled")] == [every_state.delayed]
        assert [j["id"] for j in listed("canceled")] == [every_state.canceled]

        job = data(f"/0/data/job/{every_state.completed}.json")
        assert (job["status"], job["result"], job["exc_info"]) == ("finished", 5, None)
        assert job["enqueued_at"] and job["created_at"] and job["ended_at"] and job["description"] == "add(a=2, b=3)"
        job = data(f"/0/data/job/{every_state.failed}.json")
        assert job["status"] == "failed" and job["result"] is None and "Traceback" in job["exc_info"]
        assert job["enqueued_at"] and job["description"]
        for job_id, status in ((every_state.pending[0], "queued"), (every_state.delayed, "scheduled"),
                               (every_state.canceled, "canceled"), (every_state.running, "started"),
                               (every_state.crm_pending, "queued")):
            job = data(f"/0/data/job/{job_id}.json")
            assert job["status"] == status and job["enqueued_at"] and job["description"], job
    finally:
        dashboard.stop()


def test_rq_dashboard_without_json_cannot_read_results(every_state: Jobs, jobs_env, tmp_path):
    """Its default serializer is pickle: a job's page needs ``--json`` (what the README says)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = _serve([str(BIN / "rq-dashboard"), "--redis-url", jobs_env.url, "--bind", "127.0.0.1", "--port",
                        str(port)], base, "/0/data/queues.json", tmp_path / "rq-dashboard-pickle.log")
    try:
        assert _get(f"{base}/0/data/job/{every_state.completed}.json")[0] == 500
        status, body = _get(base + "/0/data/queues.json")  # counts need no serializer
        assert status == 200 and len(json.loads(body)["queues"]) == 3
    finally:
        dashboard.stop()


def _exporter(jobs_env, tmp_path) -> tuple[Tool, str]:
    if not (BIN / "rq-exporter").exists():
        pytest.fail("rq-exporter is not installed: bash scripts/bootstrap.sh with FIKIRI_DEV=1 installs it "
                    "(requirements-nodeps.txt)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tool = Tool([str(BIN / "rq-exporter"), "--redis-url", jobs_env.url, "--host", "127.0.0.1", "--port", str(port)],
                tmp_path / "rq-exporter.log")
    wait_until(lambda: _get(base + "/metrics")[0] == 200 or tool.proc.poll() is not None, timeout=30,
               message="rq-exporter answering")
    return tool, base


def test_rq_exporter_metrics_show_every_queue_and_count(every_state_no_live_worker: Jobs, jobs_env, tmp_path):
    exporter, base = _exporter(jobs_env, tmp_path)
    assert exporter.proc.poll() is None, exporter.log()
    try:
        status, body = _get(base + "/metrics")
        assert status == 200
        text = body.decode()
        jobs = {(q, s): float(v) for q, s, v in
                re.findall(r'^rq_jobs\{queue="([^"]+)",status="([^"]+)"\} (\S+)$', text, re.M)}
        expected = {
            ("fikiri:email", "queued"): 4, ("fikiri:email", "scheduled"): 1, ("fikiri:email", "finished"): 1,
            ("fikiri:email", "failed"): 1, ("fikiri:email", "started"): 0, ("fikiri:email", "deferred"): 0,
            ("fikiri:ai", "started"): 1, ("fikiri:ai", "queued"): 0, ("fikiri:crm", "queued"): 1,
        }
        assert {k: jobs.get(k) for k in expected} == expected, text
        assert {q for q, _s in jobs} == {"fikiri:email", "fikiri:ai", "fikiri:crm"}
    finally:
        exporter.stop()


def test_rq_tools_list_our_live_workers(every_state: Jobs, jobs_env, tmp_path):
    """rq:workers holds worker keys (rq:worker:<name>), as RQ's tools read it: with bare names
    there, Worker.all raised 'Not a valid RQ worker key' and rq-exporter answered 500."""
    exporter, base = _exporter(jobs_env, tmp_path)
    try:
        status, body = _get(base + "/metrics")
        assert status == 200, exporter.log()[-2000:]
        assert re.search(r'^rq_workers\{name="[^"]+",queues="fikiri:ai",state="busy"\} 1\.0$', body.decode(), re.M)
    finally:
        exporter.stop()
    info = subprocess.run([str(BIN / "rq"), "info", "--url", jobs_env.url, "--only-workers"], capture_output=True,
                          text=True, timeout=60)
    assert info.returncode == 0 and "1 workers, 3 queues" in info.stdout, info.stdout + info.stderr
