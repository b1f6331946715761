"""``async def`` tasks: on the ``async`` worker's event loop, in every other worker class
(``asyncio.run`` per job) and in the fallback, through the one runner: results, retries,
progress, the result rules, and timeouts and stops that interrupt a task at its ``await``.
Real workers, a real Redis; throughput is measured in bench/async_tasks.py, never here."""

from __future__ import annotations

import time

import pytest

from core.api.jobs import get_job, stop_job
from core.api.queues import email_queue
from core.platform.connection import get_redis, redis_available
from core.queue.job_model import JobStatus
from tests.conftest import finished
from tests.servers import wait_until

CLASSES = ("async", "simple", "threaded", "prefork", "fork")


def test_the_async_worker_runs_async_and_sync_tasks_side_by_side(jobs_env, start_worker):
    async_ids = [email_queue.enqueue_job("async_add", {"a": i, "b": 1}) for i in range(60)]
    sync_ids = [email_queue.enqueue_job("add", {"a": i, "b": 2}) for i in range(20)]
    slow = email_queue.enqueue_job("sleep_then_count", {"seconds": 0.5, "key": "test:mixed"})
    start_worker("email", "--worker-class", "async", "--concurrency", "16")
    assert [finished(j).result for j in async_ids] == [i + 1 for i in range(60)]
    assert [finished(j).result for j in sync_ids] == [i + 2 for i in range(20)]
    assert finished(slow).result == "slept" and get_redis().get("test:mixed") == b"1"
    assert all(get_job(j).mode == "redis" for j in async_ids + sync_ids)


@pytest.mark.parametrize("worker_class", CLASSES)
def test_async_tasks_run_in_every_worker_class(jobs_env, start_worker, worker_class):
    ids = [email_queue.enqueue_job("async_add", {"a": i, "b": 10}) for i in range(5)]
    progress = email_queue.enqueue_job("async_progress", {"steps": 3})
    retried = email_queue.enqueue_job("async_fail_times", {"key": f"test:afail:{worker_class}", "times": 1})
    not_json = email_queue.enqueue_job("async_not_json", {})
    start_worker("email", "--worker-class", worker_class)
    assert [finished(j).result for j in ids] == [i + 10 for i in range(5)]
    job = finished(progress)
    assert (job.result, job.progress) == (3, {"done": 3, "total": 3})
    job = finished(retried, timeout=60)
    assert (job.status, job.result, job.retry_count) == (JobStatus.COMPLETED, {"attempts": 2}, 1)
    job = finished(not_json)
    assert job.status == JobStatus.FAILED and "returned a set, which is not JSON" in job.error
    assert job.retry_count == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_a_timeout_interrupts_an_awaiting_task(jobs_env, start_worker, worker_class):
    """The job waits 30 s in an await; its 1 s timeout ends it (failed, retries used up at 0)
    without it ever reaching its end, and the worker goes on with the next job."""
    job_id = email_queue.enqueue_job("async_sleep", {"seconds": 30, "key": "test:atimeout"}, timeout=1, max_retries=0)
    start_worker("email", "--worker-class", worker_class)
    job = finished(job_id, timeout=25)
    assert job.status == JobStatus.FAILED
    assert "JobTimeoutException: task 'async_sleep' exceeded its timeout of 1s" in job.error
    assert get_redis().get("test:atimeout:started") == b"1" and get_redis().get("test:atimeout") is None
    assert finished(email_queue.enqueue_job("async_add", {"a": 1, "b": 1})).result == 2


@pytest.mark.parametrize(("worker_class", "cooperative"), [
    ("async", False), ("async", True), ("simple", False), ("threaded", False), ("prefork", False),
])
def test_stop_interrupts_an_awaiting_task(jobs_env, start_worker, worker_class, cooperative):
    """A stop ends the awaiting job canceled, not retried (it has 3 retries): a cooperative task
    sees should_stop(); one that does not look is cancelled at its await after the grace."""
    start_worker("email", "--worker-class", worker_class, env={"JOBS_STOP_GRACE": "1"})
    job_id = email_queue.enqueue_job("async_sleep", {"seconds": 60, "key": "test:astop", "cooperative": cooperative})
    wait_until(lambda: get_redis().get("test:astop:started") == b"1", timeout=15)
    if worker_class == "async":  # a job beside it on the same loop is not disturbed by the stop
        beside = email_queue.enqueue_job("async_sleep", {"seconds": 3, "key": "test:beside"})
    stop_job(job_id, by="tester")
    job = finished(job_id, timeout=20)
    assert job.status == JobStatus.CANCELED and job.error == "stopped by tester"
    assert get_redis().get("test:astop") is None  # never got past its await
    assert bool(get_redis().get("test:astop:noticed")) == cooperative
    if worker_class == "async":
        assert finished(beside, timeout=20).result == "slept" and get_redis().get("test:beside") == b"1"
    time.sleep(1.5)
    assert get_job(job_id).status == JobStatus.CANCELED and get_redis().get("test:astop:started") == b"1"
    assert finished(email_queue.enqueue_job("async_add", {"a": 2, "b": 2})).result == 4


def test_async_concurrency_is_bounded_by_the_setting(jobs_env, start_worker):
    """JOBS_WORKER_ASYNC_CONCURRENCY=5: of 20 jobs awaiting 0.5 s each, at most 5 are in their
    await at any moment (the tasks' own start/end times), and they do overlap."""
    ids = [email_queue.enqueue_job("async_span", {"seconds": 0.5, "key": "test:spans"}) for _ in range(20)]
    start_worker("email", "--worker-class", "async", env={"JOBS_WORKER_ASYNC_CONCURRENCY": "5"})
    assert all(finished(i).result == "spanned" for i in ids)
    spans = [tuple(map(float, v.decode().split(","))) for v in get_redis().lrange("test:spans", 0, -1)]
    assert len(spans) == 20
    at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert 2 <= at_once <= 5


@pytest.mark.fallback
def test_an_async_task_runs_in_the_fallback(jobs_env):
    jobs_env.stop()
    wait_until(lambda: not redis_available(), timeout=5)
    job_id = email_queue.enqueue_job("async_add", {"a": 40, "b": 2})
    job = email_queue.wait_for(job_id, timeout=30)
    assert (job.mode, job.status, job.result) == ("fallback", JobStatus.COMPLETED, 42)


def test_readme_async_tasks_blocks(jobs_env, tmp_path, monkeypatch):
    """The README's async task, in a module of its own, served by the README's async worker command."""
    import signal
    import subprocess
    import sys

    from core.queue import task_registry
    from tests.readme_blocks import ROOT, commands, readme_block, shell_env

    code = readme_block("The worker", "async def wait_then_echo").code
    (command,) = commands(readme_block("The worker", "--worker-class async --concurrency 200").code)
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "async_tasks.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    try:
        import myapp.async_tasks as module

        ids = [module.wait_then_echo.enqueue(text=f"hi {i}") for i in range(20)]
        log_path = tmp_path / "worker.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=shell_env(jobs_env.url, PYTHONPATH=f"{ROOT}:{tmp_path}"), start_new_session=True)
            try:
                jobs = [finished(i, timeout=60) for i in ids]
            finally:
                proc.send_signal(signal.SIGTERM)
                code_ = proc.wait(timeout=60)
        assert code_ == 0, log_path.read_text()[-3000:]
        assert [(j.result, j.mode) for j in jobs] == [(f"hi {i}", "redis") for i in range(20)]
        assert "(async) serving" in log_path.read_text()
    finally:
        task_registry._tasks.clear()
        task_registry._tasks.update(saved)
        for name in ("myapp", "myapp.async_tasks"):
            sys.modules.pop(name, None)


def test_a_hard_stop_always_ends_an_awaiting_task_as_stopped(jobs_env):
    """The runner itself, 200 times: a hard stop from another thread (the heartbeat's timer) while
    the task awaits must end it as JobStopped, never let the cancellation escape the runner. The
    stop's mark was once set after the cancel, and a loop that ran first saw a bare cancellation."""
    import asyncio
    import threading

    from core.execution import stopping
    from core.execution.runner import run_attempt_async

    for i in range(200):
        job_id = f"race-{i}"
        out: list = []

        def run(job_id: str = job_id, i: int = i, out: list = out) -> None:
            try:
                out.append(asyncio.run(run_attempt_async(job_id, "email", "async_sleep",
                                                         {"seconds": 30, "key": f"test:race:{i}"}, 60)))
            except BaseException as exc:  # noqa: BLE001 - what escaped the runner is the failure
                out.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        wait_until(lambda job_id=job_id: stopping.is_running(job_id), timeout=10)
        assert stopping.request(job_id) and stopping.hard_stop(job_id)
        thread.join(10)
        assert not thread.is_alive()
        result = out[0]
        assert not isinstance(result, BaseException), f"run {i}: {result!r} escaped the runner"
        assert not result.ok and not result.retryable and result.error.startswith("JobStopped"), result
