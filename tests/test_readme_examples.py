"""The README's "Flow control" and "Workflows" examples, run as written: each Python block is
executed in order against the test's own Redis and SQLite, then a worker (in this process, so it
knows the tasks the blocks registered) runs what they queued; the CLI lines run as commands."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from core import task_registry
from core.job_model import JobStatus
from core.redis_queues import email_queue, get_job
from core.worker import Worker
from core.workflows import get_batch
from tests.servers import ROOT

README = ROOT / "README.md"


@pytest.fixture(autouse=True)
def _registry_restored(jobs_env) -> Iterator[None]:
    """The blocks register tasks in this process: take them away again for the tests after."""
    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    yield
    task_registry._tasks.clear()
    task_registry._tasks.update(saved)


def blocks(heading: str) -> list[tuple[str, str]]:
    section = README.read_text().split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def run_worker() -> None:
    """Serve every queue until nothing is left to run (burst), in a thread of this process."""
    worker = Worker([email_queue.name, "fikiri:ai", "fikiri:crm"], worker_class="simple")
    thread = threading.Thread(target=worker.work, kwargs={"burst": True}, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker did not finish the README's jobs"


def test_flow_control_examples_run_as_written(jobs_env):
    namespace: dict = {}
    commands = 0
    for language, code in blocks("Flow control"):
        if language == "python":
            exec(compile(code, "README.md (Flow control)", "exec"), namespace)
        elif language == "bash":
            for line in code.splitlines():
                if line.startswith(".venv/bin/python -m scripts.jobs"):
                    args = shlex.split(line.split("#")[0])[1:]
                    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
                    assert done.returncode == 0, done.stderr
                    commands += 1
    assert commands == 2 and not email_queue.paused  # paused, then resumed, as the lines say
    summarize, import_contacts = namespace["summarize"], namespace["import_contacts"]
    assert summarize.name == "summarize" and import_contacts(batch_ids=[1, 2]) == 2
    run_worker()
    assert namespace["push_contact"].queue.short_name == "crm"


def test_workflow_examples_run_as_written(jobs_env):
    namespace: dict = {}
    for language, code in blocks("Workflows"):
        if language == "python":
            exec(compile(code, "README.md (Workflows)", "exec"), namespace)
    run_worker()
    chain_ids, batch_id = namespace["ids"], namespace["batch_id"]
    assert get_job(chain_ids[-1]).result == 2  # two messages labelled "lead"
    assert get_job(chain_ids[1]).payload["previous"] == [101, 102]
    progress = get_batch(batch_id)
    assert progress["done"] and progress["total"] == 2 and get_job(progress["callback_job_id"]).result.endswith(
        "of 2 threads processed")
    # the sync has no connected Gmail account here: it fails, so the dependent job is canceled
    # and the on_failure callback reports it
    sync = get_job(namespace["sync_id"])
    threads = get_job(namespace["threads_id"])
    assert sync.status == JobStatus.FAILED
    assert threads.status == JobStatus.CANCELED and threads.error.startswith(f"dependency {sync.job_id} failed")


def test_a_burst_worker_in_a_thread_leaves_no_heartbeat_running(jobs_env):
    """Run in a thread (as above), a worker that ends its burst stops its heartbeat too."""
    before = {t.name for t in threading.enumerate() if t.name == "fikiri-heartbeat"}
    assert not before
    email_queue.enqueue_job("add", {"a": 1, "b": 1})
    run_worker()
    time.sleep(3)  # more than a heartbeat interval (1 s in the tests)
    assert not [t for t in threading.enumerate() if t.name == "fikiri-heartbeat" and t.is_alive()]
