"""The fork class after issue 22's fixes (a spare work-horse forked while the current job runs,
reaped off the job's path, timings handed to the parent): still one fresh process per job, still
one job at a time per slot, and every job's timing reaches Redis. Speed is in bench/fork_vs_rq.py."""

from __future__ import annotations

from core.api.queues import email_queue
from core.platform.connection import get_redis
from core.queue import task_metrics
from core.queue.job_model import JobStatus
from tests.conftest import finished
from tests.servers import wait_until


def test_each_job_runs_in_a_fresh_process_one_at_a_time(jobs_env, start_worker):
    ids = [email_queue.enqueue_job("pid_span", {"key": "test:fork"}) for _ in range(12)]
    worker = start_worker("email", "--worker-class", "fork")
    jobs = [finished(i) for i in ids]
    pids = [job.result for job in jobs]
    assert all(job.status == JobStatus.COMPLETED and job.mode == "redis" for job in jobs)
    assert len(set(pids)) == 12 and worker.pid not in pids  # a new work-horse for every job
    spans = sorted(tuple(map(float, v.decode().split(",")[1:])) for v in get_redis().lrange("test:fork", 0, -1))
    assert len(spans) == 12
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))  # never two at once


def test_timings_of_fork_jobs_reach_redis_through_the_parent(jobs_env, start_worker):
    ok = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(5)]
    bad = [email_queue.enqueue_job("always_fail", {"message": f"nope {i}"}) for i in range(2)]
    start_worker("email", "--worker-class", "fork")
    assert [finished(i).result for i in ok] == [1, 2, 3, 4, 5]
    assert all(finished(i).status == JobStatus.FAILED for i in bad)
    wait_until(lambda: len(task_metrics.get_task_history("add")) == 5
               and len(task_metrics.get_task_history("always_fail")) == 2, timeout=20,
               message="the parent flushes the work-horses' timings")
    assert {entry["job_id"] for entry in task_metrics.get_task_history("add")} == set(ok)
    failures = task_metrics.get_task_history("always_fail")
    assert {entry["error"] for entry in failures} == {"ValueError: nope 0", "ValueError: nope 1"}
    stats = task_metrics.get_task_stats("add")["add"]
    assert stats["last_status"] == "completed"
