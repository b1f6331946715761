"""The shutdown deadline (DESIGN.md "Crashes are stalls", JOBS_WORKER_SHUTDOWN_TIMEOUT): after
SIGTERM a worker stops claiming, gives the jobs in hand the deadline, then interrupts the ones still
running and requeues them without using a retry or a stall, and exits 0. Real worker processes of
every class, each job's runs written to a file (tests/stall_tasks.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform import keys
from core.queue.job_model import JobStatus
from core.queue.task_registry import load_task_modules
from tests.servers import wait_until
from tests.stall_tasks import runs

IMPORT = ("--import", "tests.stall_tasks")
DEADLINE = {"JOBS_WORKER_SHUTDOWN_TIMEOUT": "1"}


@pytest.fixture(autouse=True)
def _tasks():
    load_task_modules(["tests.stall_tasks"])


def _started(path) -> None:
    wait_until(lambda: os.path.exists(path), timeout=30, message="the run to start")


@pytest.mark.parametrize("kind", ["simple", "threaded", "prefork", "fork", "async"])
def test_sigterm_past_the_deadline_requeues_the_job_uncounted_and_exits_zero(jobs_env, start_worker, tmp_path,
                                                                             kind):
    task = "logged_run_async" if kind == "async" else "logged_run"  # the async class cancels it at an await
    job_id = email_queue.enqueue_job(task, {"directory": str(tmp_path), "seconds": 120})
    worker = start_worker("email", "--worker-class", kind, "--concurrency", "1", *IMPORT, env=DEADLINE)
    _started(tmp_path / job_id)
    signaled = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    took = time.monotonic() - signaled
    job = get_job(job_id)
    assert job.status == JobStatus.PENDING, job
    assert job.retry_count == 0 and job.stalls == 0
    assert "shutdown deadline" in job.error and "JOBS_WORKER_SHUTDOWN_TIMEOUT=1s" in job.error
    [run] = runs(tmp_path / job_id)
    assert not run["ended"]  # interrupted, not finished
    assert jobs_env.client().zcard(keys.started(email_queue.name)) == 0
    print(f"{kind}: SIGTERM to exit {took:.1f}s with a 1 s deadline")


def test_the_requeued_job_runs_again_to_its_end(jobs_env, start_worker, tmp_path):
    job_id = email_queue.enqueue_job("logged_run", {"directory": str(tmp_path), "seconds": 1.5})
    worker = start_worker("email", *IMPORT, env={"JOBS_WORKER_SHUTDOWN_TIMEOUT": "0.3"})
    _started(tmp_path / job_id)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    start_worker("email", *IMPORT)
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=30)
    assert job.retry_count == 0 and job.stalls == 0
    first, second = runs(tmp_path / job_id)
    assert not first["ended"] and second["ended"] and second["start"] > first["last"]


def test_a_job_that_ends_before_the_deadline_completes(jobs_env, start_worker, tmp_path):
    job_id = email_queue.enqueue_job("logged_run", {"directory": str(tmp_path), "seconds": 1})
    worker = start_worker("email", *IMPORT, env={"JOBS_WORKER_SHUTDOWN_TIMEOUT": "20"})
    _started(tmp_path / job_id)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert get_job(job_id).status == JobStatus.COMPLETED


@pytest.mark.parametrize("kind", ["threaded", "prefork"])
def test_a_task_declared_not_interruptible_is_waited_for_past_the_deadline(jobs_env, start_worker, tmp_path,
                                                                           kind):
    job_id = email_queue.enqueue_job("logged_run_not_interruptible", {"directory": str(tmp_path), "seconds": 3})
    worker = start_worker("email", "--worker-class", kind, "--concurrency", "1", *IMPORT, env=DEADLINE)
    _started(tmp_path / job_id)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert get_job(job_id).status == JobStatus.COMPLETED
    assert "not interruptible" in worker.log()


def test_a_thread_blocked_in_c_past_the_deadline_yields_its_lease(jobs_env, start_worker):
    """time.sleep(30) in a thread cannot be interrupted: the worker exits 0 without requeueing it
    under its running code; the sweep requeues it after its lease, counting no stall."""
    client = jobs_env.client()
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 30, "key": "test:yield"})
    worker = start_worker("email", "--worker-class", "threaded", "--concurrency", "1", env=DEADLINE)
    wait_until(lambda: client.get("test:yield:started"), timeout=30, message="the run to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert "yielding their leases" in worker.log()
    assert client.hget(keys.job(job_id), "fk_yield") is not None
    start_worker("email")
    wait_until(lambda: client.get("test:yield:started") == b"2", timeout=30, message="the job to run again")
    job = get_job(job_id)
    assert job.stalls == 0 and job.retry_count == 0


DEFAULT_LEASE = {"JOBS_WORKER_HEARTBEAT_INTERVAL": "1", "JOBS_WORKER_HEARTBEAT_GRACE": "6",
                 "JOBS_WORKER_MAINTENANCE_INTERVAL": "2"}  # the defaults (the tests' own are faster)


def test_the_lease_defaults_are_the_documented_arithmetic():
    from core.config import Settings

    settings = Settings()
    assert (settings.worker_heartbeat_interval, settings.worker_heartbeat_grace,
            settings.worker_maintenance_interval) == (1, 6, 2)
    assert settings.worker_lease + settings.worker_maintenance_interval < 10  # recovery bound
    assert settings.worker_lease - settings.worker_heartbeat_interval >= 5  # a 5 s pause keeps its lease


def test_a_worker_sigstopped_5s_keeps_its_job(jobs_env, start_worker, tmp_path):
    """With the default lease (7 s), a worker paused 5 s (SIGSTOP: a GC pause, a starved VM) while
    another worker sweeps does not lose its job: one run, no stall."""
    job_id = email_queue.enqueue_job("logged_run", {"directory": str(tmp_path), "seconds": 7})
    paused = start_worker("email", "--concurrency", "1", *IMPORT, env=DEFAULT_LEASE)
    _started(tmp_path / job_id)
    start_worker("email", "--concurrency", "1", *IMPORT, env=DEFAULT_LEASE)  # sweeps meanwhile
    time.sleep(0.5)
    for pid in [paused.pid, *paused.children()]:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(5)
    for pid in [paused.pid, *paused.children()]:
        os.kill(pid, signal.SIGCONT)
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=30)
    assert job.stalls == 0 and job.retry_count == 0
    [run] = runs(tmp_path / job_id)
    assert run["ended"]


def test_a_worker_paused_past_its_lease_is_fenced_and_stops_its_stale_run(jobs_env, start_worker, tmp_path):
    """Paused longer than its lease (3 s with the tests' settings), a worker loses its job to another
    one. On waking, its heartbeat learns the job was taken back and stops that stale run (whose
    progress and finish the scripts refuse): the job ends once, by the new run."""
    job_id = email_queue.enqueue_job("logged_run", {"directory": str(tmp_path), "seconds": 6, "progress": True})
    paused = start_worker("email", "--concurrency", "1", *IMPORT)
    _started(tmp_path / job_id)
    start_worker("email", "--concurrency", "1", *IMPORT)
    group = [paused.pid, *paused.children()]
    for pid in group:
        os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: len(runs(tmp_path / job_id)) == 2, timeout=30, message="the job to run again elsewhere")
    woke = time.time()
    for pid in group:
        os.kill(pid, signal.SIGCONT)
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=30)
    stale, fresh = runs(tmp_path / job_id)
    assert not stale["ended"] and fresh["ended"] and job.result == fresh["run"]
    assert stale["last"] < woke + 3  # stopped within a heartbeat or two of waking
    assert job.stalls == 1 and job.retry_count == 0
    # (whether its progress was refused first depends on which wakes first, the run or the heartbeat
    # that ends it; tests/test_attempt_fencing.py checks the refusal itself)
    assert "lost its lease (the sweep took it back); stopping this stale run" in paused.log()
