"""The README's "Flow control" and "Workflows" examples, run as written: each Python block is
executed in order against the test's own Redis and SQLite, then a worker (in this process, so it
knows the tasks the blocks registered) runs what they queued. Blocks are fetched through
tests.readme_blocks.readme_block, which is how tests/test_readme_blocks.py knows they are run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from core.api.batches import get_batch
from core.api.jobs import get_job
from core.api.queues import ai_queue, crm_queue, email_queue
from core.platform.connection import get_redis
from core.queue import task_registry
from core.queue.job_model import JobStatus
from core.worker.loop import Worker
from tests.readme_blocks import Block, readme_block


@pytest.fixture(autouse=True)
def _registry_restored(jobs_env) -> Iterator[None]:
    """The blocks register tasks in this process: take them away again for the tests after."""
    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    yield
    task_registry._tasks.clear()
    task_registry._tasks.update(saved)


def run(block: Block, namespace: dict) -> None:
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)


def run_worker() -> None:
    """Serve every queue until nothing is left to run (burst), in a thread of this process."""
    worker = Worker([email_queue.name, "fikiri:ai", "fikiri:crm"], worker_class="simple")
    thread = threading.Thread(target=worker.work, kwargs={"burst": True}, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker did not finish the README's jobs"


def ended_in_redis(queue, state: str = "finished") -> list:
    ids = [i.decode() for i in get_redis().zrange(f"rq:{state}:{queue.name}", 0, -1)]
    jobs = [get_job(i) for i in ids]
    assert all(j.mode == "redis" for j in jobs), [(j.job_id, j.mode) for j in jobs]
    return jobs


def test_flow_control_examples_run_as_written(jobs_env):
    namespace: dict = {}
    run(readme_block("Flow control", '@ai_queue.task(rate_limit="60/m", rate_key="provider")'), namespace)
    run(readme_block("Flow control", "def sync_mailbox(user_id: str) -> dict: ..."), namespace)
    run(readme_block("Flow control", 'raise RetryAfter(30, "CRM asked us to wait")'), namespace)
    run(readme_block("Flow control", "email_queue.pause()"), namespace)
    assert not email_queue.paused  # paused, then resumed
    run(readme_block("Flow control", "if should_stop():"), namespace)

    summarize, import_contacts = namespace["summarize"], namespace["import_contacts"]
    assert summarize.name == "summarize" and import_contacts(batch_ids=[1, 2]) == 2
    # the tasks the blocks declared, run through Redis by a worker
    mailbox = namespace["sync_mailbox"].enqueue(user_id="42")
    busy = namespace["push_contact"].enqueue(contact_id=1, crm_busy_until=time.time() + 3600)
    free = namespace["push_contact"].enqueue(contact_id=2)
    contacts = import_contacts.enqueue(batch_ids=[1, 2, 3])
    run_worker()

    summaries = ended_in_redis(ai_queue)  # the block's two summarize calls
    assert sorted(j.payload["thread_id"] for j in summaries) == [7, 8]
    assert all(j.status == JobStatus.COMPLETED and j.result is None for j in summaries)
    assert get_job(mailbox).status == JobStatus.COMPLETED and get_job(mailbox).mode == "redis"
    assert b"gmail-sync:42" in get_redis().hget(f"rq:job:{mailbox}", "fk_limits")
    deferred = get_job(busy)
    assert deferred.status == JobStatus.DELAYED and deferred.deferrals == 1
    assert deferred.reason == "retry after 30s: CRM asked us to wait" and deferred.retry_count == 0
    assert get_job(free).result == "ok" and get_job(free).mode == "redis"
    assert get_job(contacts).result == 3 and get_job(contacts).mode == "redis"
    assert namespace["push_contact"].queue is crm_queue


def test_workflow_examples_run_as_written(jobs_env):
    namespace: dict = {}
    run(readme_block("Workflows", "def sync_report(parent_id: str, result=None, outcome=None, error=None) -> str:"),
        namespace)
    run(readme_block("Workflows", "ids = chain([Step(\"new_message_ids\", {\"user_id\": \"42\"}),"), namespace)
    run_worker()
    chain_ids, batch_id = namespace["ids"], namespace["batch_id"]
    assert get_job(chain_ids[-1]).result == 2  # two messages labelled "lead"
    assert get_job(chain_ids[1]).payload["previous"] == [101, 102]
    assert all(get_job(i).mode == "redis" for i in chain_ids)
    progress = get_batch(batch_id)
    assert progress["done"] and progress["total"] == 2 and get_job(progress["callback_job_id"]).result.endswith(
        "of 2 threads processed")
    # the sync has no connected Gmail account here: it fails, so the dependent job is canceled
    # and the on_failure callback reports it
    sync = get_job(namespace["sync_id"])
    threads = get_job(namespace["threads_id"])
    assert sync.status == JobStatus.FAILED and sync.mode == "redis"
    assert threads.status == JobStatus.CANCELED and threads.error.startswith(f"dependency {sync.job_id} failed")


def test_a_burst_worker_in_a_thread_leaves_no_heartbeat_running(jobs_env):
    """Run in a thread (as above), a worker that ends its burst stops its heartbeat too."""
    before = {t.name for t in threading.enumerate() if t.name == "fikiri-heartbeat"}
    assert not before
    email_queue.enqueue_job("add", {"a": 1, "b": 1})
    run_worker()
    time.sleep(3)  # more than a heartbeat interval (1 s in the tests)
    assert not [t for t in threading.enumerate() if t.name == "fikiri-heartbeat" and t.is_alive()]


def test_job_groups_worked_example_runs_as_written_and_the_clicks_go_first(jobs_env, capsys):
    from core.queue import lifecycle

    run(readme_block("Flow control", '@ai_queue.task(group="{user_id}", group_concurrency=4)'), {})
    printed = capsys.readouterr().out
    assert "'group': 'acme', 'waiting': 2000, 'running': 0" in printed and "'group': 'ann'" in printed
    acme = ai_queue.groups()[0]
    assert acme["group"] == "acme" and acme["weight"] == 2.0 and not acme["paused"]  # paused, then resumed
    first = lifecycle.claim(get_redis(), "w", "c", [ai_queue.name], 4, 300)
    assert sorted(job.kwargs["user_id"] for job in first) == ["acme", "ann", "ben", "cat"]
    assert all(job.mode == "redis" for job in (get_job(j.job_id) for j in first))
