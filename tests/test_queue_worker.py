"""The worker process (scripts/rq_worker.py): shutdown signals, SIGKILL recovery and its options."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from core.api.jobs import get_job
from core.api.queues import ai_queue, crm_queue, email_queue
from core.queue.job_model import JobStatus
from tests.servers import ROOT, wait_until, worker_env


def running(job_id, timeout=20):
    wait_until(lambda: get_job(job_id).status == JobStatus.RUNNING, timeout=timeout, message=f"{job_id} to start")


def completed(job_id, timeout=40):
    return wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.COMPLETED and j, timeout=timeout,
                      message=f"{job_id} to complete")


def test_sigterm_finishes_the_job_in_hand_and_exits_zero(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 2, "key": "test:warm"})
    waiting = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    worker = start_worker("email", "--concurrency", "1")
    running(job_id)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert get_job(job_id).status == JobStatus.COMPLETED
    assert int(jobs_env.client().get("test:warm")) == 1
    assert get_job(waiting).status == JobStatus.PENDING  # not taken by a stopping worker


def test_second_sigterm_requeues_the_job_for_another_worker(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 4, "key": "test:cold"}, max_retries=0)
    worker = start_worker("email")
    running(job_id)
    worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 1
    job = get_job(job_id)
    assert job.status == JobStatus.PENDING and job.retry_count == 0  # an operator's stop is not an attempt
    assert "interrupted" in job.error
    assert jobs_env.client().get("test:cold") is None
    start_worker("email")
    completed(job_id)
    assert int(jobs_env.client().get("test:cold")) == 1
    assert int(jobs_env.client().get("test:cold:started")) == 2


def test_sigkill_mid_job_is_a_stall_run_again_by_another_worker(jobs_env, start_worker):
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 3, "key": "test:killed"}, max_retries=2)
    victim = start_worker("email")
    wait_until(lambda: jobs_env.client().get("test:killed:started"), timeout=20, message="the task to start")
    killed_at = time.monotonic()
    victim.kill_hard()
    start_worker("email")
    job = completed(job_id, timeout=60)
    recovery = time.monotonic() - killed_at
    assert job.retry_count == 0 and job.stalls == 1  # the SIGKILLed attempt is a stall, not a retry
    assert int(jobs_env.client().get("test:killed")) == 1
    assert int(jobs_env.client().get("test:killed:started")) == 2
    stats = email_queue.get_stats()
    assert stats["abandoned_jobs"] == 1 and stats["retried_jobs"] == 0 and stats["completed_jobs"] == 1
    from core.queue.task_metrics import get_task_stats

    metrics = get_task_stats("sleep_then_count")["sleep_then_count"]
    assert metrics["total"] == 2 and metrics["abandoned"] == 1 and metrics["succeeded"] == 1
    # Heartbeat 1 s + grace 2 s, sweep every 2 s (test settings) + the 3 s job.
    assert recovery < 45, f"recovery took {recovery:.1f}s"


def test_a_second_sigkill_past_max_stalls_fails_the_job_as_a_repeat_crash(jobs_env, start_worker):
    """max_retries=0 and the default max_stalls=1: the first SIGKILL is a stall (the job runs again),
    the second fails it as a repeat crash, with both stalls in its events."""
    client = jobs_env.client()
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 30, "key": "test:lost"}, max_retries=0)
    victim = start_worker("email")
    wait_until(lambda: client.get("test:lost:started") == b"1", timeout=20, message="the first run to start")
    victim.kill_hard()
    second = start_worker("email")
    wait_until(lambda: client.get("test:lost:started") == b"2", timeout=60, message="the second run to start")
    assert get_job(job_id).stalls == 1 and get_job(job_id).retry_count == 0
    second.kill_hard()
    start_worker("email")
    job = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.FAILED and j, timeout=60)
    assert job.error and "repeat crash" in job.error and "max_stalls=1" in job.error
    assert job.retry_count == 0 and job.stalls == 2
    stats = email_queue.get_stats()
    assert stats["abandoned_jobs"] == 2 and stats["failed_jobs"] == 1 and stats["retried_jobs"] == 0
    from core.platform import keys

    events = [f[b"event"].decode() for _id, f in client.xrange(keys.events()) if f[b"job"] == job_id.encode()]
    assert events.count("abandoned") == 2 and events[-1] == "failed"


def test_worker_serves_only_the_named_queues(jobs_env, start_worker):
    email_id = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    ai_id = ai_queue.enqueue_job("ai_echo", {"text": "hi"})
    crm_id = crm_queue.enqueue_job("crm_echo", {"text": "hi"})
    start_worker("ai", "crm", "--burst").wait(60)
    assert get_job(ai_id).result == "hi" and get_job(crm_id).result == "hi"
    assert get_job(email_id).status == JobStatus.PENDING


def test_unknown_queue_name_exits_nonzero_with_a_clear_message(jobs_env):
    proc = subprocess.run([sys.executable, "scripts/rq_worker.py", "emails"], cwd=ROOT, capture_output=True,
                          text=True, env=worker_env(jobs_env.url), timeout=60)
    assert proc.returncode == 2
    assert "unknown queue 'emails'" in proc.stderr and "accepted: email" in proc.stderr


def test_simple_worker_class_runs_jobs(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("add", {"a": i, "b": i}) for i in range(3)]
    worker = start_worker("email", "--burst", "--worker-class", "simple")
    assert worker.wait(60) == 0
    assert [get_job(i).result for i in ids] == [0, 2, 4]
    assert "(simple) serving" in worker.log()


def test_two_processes_share_the_work(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("sleep_then_count", {"seconds": 1, "key": "test:pair"}) for _ in range(4)]
    worker = start_worker("email", "--processes", "2", "--concurrency", "1")
    for job_id in ids:
        completed(job_id)
    names = {get_job(job_id) and jobs_env.client().hget(f"rq:job:{job_id}", "worker_name") for job_id in ids}
    assert len(names) == 2
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def test_import_option_loads_a_task_module(jobs_env, start_worker):
    # The test process knows the demo tasks; the worker learns them only through --import.
    from core.queue.task_registry import load_task_modules

    load_task_modules(["scripts.demo_tasks"])
    job_id = crm_queue.enqueue_job("demo_invalid_contact", {"email": "x"})
    start_worker("crm", "--burst", "--import", "scripts.demo_tasks").wait(60)
    job = get_job(job_id)
    assert job.status == JobStatus.FAILED and "is not valid" in job.error


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigkill_of_the_main_process_alone_never_leaves_the_job_running_twice(jobs_env, start_worker):
    """The work-horse dies with its parent (PR_SET_PDEATHSIG), so the sweep's retry runs alone."""
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 3, "key": "test:orphan"}, max_retries=2)
    victim = start_worker("email", "--concurrency", "1")
    wait_until(lambda: jobs_env.client().get("test:orphan:started"), timeout=20, message="the task to start")
    horses = victim.children()
    assert horses, "the prefork worker has a child process"
    victim.proc.send_signal(signal.SIGKILL)  # the main process only
    victim.proc.wait(10)
    wait_until(lambda: not any(_alive(pid) for pid in horses), timeout=5, message="the horse to die with its parent")
    start_worker("email")
    job = completed(job_id, timeout=60)
    assert job.retry_count == 0 and job.stalls == 1  # a stall, not a retry
    assert int(jobs_env.client().get("test:orphan")) == 1  # only the retry finished: the horse never did


def test_json_log_lines_carry_the_attempt_fields(jobs_env, start_worker):
    import json

    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    worker = start_worker("email", "--burst", env={"JOBS_LOG_FORMAT": "json"})
    assert worker.wait(60) == 0
    assert get_job(job_id).wait(timeout=5).result == 3  # Job.wait on an ended job returns at once
    entries = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    attempt = next(e for e in entries if e.get("job_id") == job_id)
    assert (attempt["task"], attempt["queue"], attempt["outcome"], attempt["level"]) == ("add", "email", "completed",
                                                                                       "INFO")
    assert isinstance(attempt["duration"], float) and attempt["logger"] == "core.queue.lifecycle"


def test_a_work_horse_killed_alone_is_a_stall_recorded_at_once(jobs_env, start_worker):
    """The OOM killer takes the work-horse, not the worker: the parent sees it die and records a
    stall now (no wait for the lease), and the job runs again, using no retry."""
    client = jobs_env.client()
    job_id = email_queue.enqueue_job("sleep_then_count", {"seconds": 2, "key": "test:oom"}, max_retries=0)
    worker = start_worker("email", "--concurrency", "1",
                          env={"JOBS_WORKER_HEARTBEAT_GRACE": "60"})  # a sweep could not be what requeued it
    wait_until(lambda: client.get("test:oom:started") == b"1", timeout=20, message="the task to start")
    [horse] = worker.children()
    os.kill(horse, signal.SIGKILL)
    job = completed(job_id, timeout=30)
    assert job.stalls == 1 and job.retry_count == 0
    assert int(client.get("test:oom:started")) == 2 and int(client.get("test:oom")) == 1
    assert "died (killed by signal 9)" in worker.log()


def test_prefork_children_retire_after_their_job_limit_and_every_job_runs_once(jobs_env, start_worker):
    """Each prefork child claims and records its own jobs, and is replaced after
    JOBS_WORKER_MAX_JOBS_PER_CHILD of them: what it claimed is run or handed back, never lost,
    stalled or run twice, and fresh children take its place."""
    client = jobs_env.client()
    ids = [email_queue.enqueue_job("stoppable", {"key": f"test:retire{i}", "seconds": 0}) for i in range(30)]
    worker = start_worker("email", "--concurrency", "2", env={"JOBS_WORKER_MAX_JOBS_PER_CHILD": "4"})
    first = set(wait_until(lambda: worker.children(), timeout=20, message="the children to start"))
    for job_id in ids:
        job = completed(job_id, timeout=30)
        assert job.stalls == 0 and job.retry_count == 0, job
    assert [client.get(f"test:retire{i}:runs") for i in range(30)] == [b"1"] * 30
    assert not first & set(worker.children()), "the first children retired"
    assert "died" not in worker.log()
