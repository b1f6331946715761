"""The seed document's migration pattern, as the README shows it (run as written), against a real worker, Redis and
database: queue a sync, register the task again in the web process, enqueue it again.

It used to answer 400 (the task's per-user limit key had no user_id), re-registering silently
dropped the per-user limit, and the second job would have run the same sync row a second time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.api.queues import get_email_queue
from core.queue import task_registry
from email_automation.gmail_sync_jobs import GmailSyncJobManager, connect_account
from tests.conftest import finished
from tests.readme_blocks import readme_block


@pytest.fixture(autouse=True)
def _registry_restored() -> Iterator[None]:
    """These tests register tasks again in this process, as the seeds do: undo it for the next tests."""
    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    yield
    task_registry._tasks.clear()
    task_registry._tasks.update(saved)


def profile_calls(fake_gmail) -> int:
    return sum(1 for request in fake_gmail.requests if request.startswith("GET /gmail/v1/users/me/profile"))


def test_the_seed_pattern_runs_one_sync_and_keeps_the_per_user_limit(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(5)
    connect_account("u1", "u1@example.com", "demo-access-token", "demo-refresh-token")
    namespace = {"user_id": "u1"}  # the block runs in a handler that knows its user
    exec(compile(readme_block("Enqueue from a Flask handler", "queue_sync_job(user_id").code, "README.md", "exec"),
         namespace)
    sync_job_manager, job_id, rq_job_id = namespace["sync_job_manager"], namespace["job_id"], namespace["rq_job_id"]

    spec = task_registry.get("email", "process_gmail_sync")
    assert (spec.limits.concurrency, spec.limits.concurrency_key) == (1, "gmail-sync:{user_id}")
    assert spec.func == sync_job_manager.process_sync_job and spec.max_retries == 3
    start_worker("email")
    first, second = finished(job_id, timeout=40), finished(rq_job_id, timeout=40)
    assert (first.status.value, first.mode, second.status.value, second.mode) == (
        "completed", "redis", "completed", "redis"), (first.error, second.error)
    results = sorted([first.result, second.result], key=lambda r: bool(r.get("skipped")))
    ran, skipped = results
    assert ran["messages_synced"] == 5 and not ran.get("skipped")
    assert skipped["skipped"] is True and skipped["status"] == "completed" and skipped["messages_synced"] == 5
    assert profile_calls(fake_gmail) == 1  # one sync against Gmail, not two


def test_a_sync_row_that_ended_is_not_run_again_by_a_direct_call(domain_env, fake_gmail, start_worker):
    fake_gmail.add_messages(2)
    connect_account("u2", "u2@example.com", "demo-access-token", "demo-refresh-token")
    manager = GmailSyncJobManager()
    job_id = manager.queue_sync_job("u2", "full")
    start_worker("email")
    assert finished(job_id, timeout=40).status.value == "completed"
    calls = profile_calls(fake_gmail)
    state = manager.process_sync_job(job_id)  # the queue job id queue_sync_job returned
    assert state["skipped"] is True and state["status"] == "completed" and state["messages_synced"] == 2
    assert profile_calls(fake_gmail) == calls


def test_registering_a_task_again_with_other_limits_is_refused(jobs_env):
    q = get_email_queue()
    with pytest.raises(ValueError, match="already registered with concurrency 1 per 'gmail-sync:{user_id}'"):
        q.register_task("process_gmail_sync", GmailSyncJobManager().process_sync_job, concurrency_limit=5,
                        concurrency_key="{user_id}")
    q.register_task("process_gmail_sync", GmailSyncJobManager().process_sync_job, concurrency_limit=1,
                    concurrency_key="gmail-sync:{user_id}")  # the same limits: fine
    assert task_registry.get("email", "process_gmail_sync").limits.concurrency == 1
