"""Every write of a running attempt is fenced by its claim (issue 21 item 1): once the sweep took a
job back, the stale attempt's finish, progress and heartbeat are refused by the scripts, and the
job's new run is never overwritten. Real redis-server, the lifecycle scripts themselves."""

from __future__ import annotations

import json
import time

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform import keys
from core.queue import lifecycle
from core.queue.job_model import JobStatus


def _take_back(client):
    """Claim the job with a lease that already ran out, then sweep: the attempt is stale."""
    [stale] = lifecycle.claim(client, "w-old", "old", [email_queue.name], 1, -1)
    [(job_id, _task, outcome)] = lifecycle.abandon_expired(client, email_queue.name)
    assert (job_id, outcome) == (stale.job_id, "stalled")
    return stale


def test_a_stale_attempts_progress_heartbeat_and_finish_are_refused(jobs_env):
    client = jobs_env.client()
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    stale = _take_back(client)
    assert get_job(job_id).stalls == 1 and get_job(job_id).retry_count == 0
    [fresh] = lifecycle.claim(client, "w-new", "new", [email_queue.name], 1, 300)
    assert fresh.job_id == job_id and fresh.member != stale.member

    assert lifecycle.report_progress(client, stale, json.dumps({"step": "old"}), 100) is False
    assert client.hget(keys.job(job_id), "fk_progress") is None
    assert lifecycle.report_progress(client, fresh, json.dumps({"step": "new"}), 100) is True
    assert get_job(job_id).progress == {"step": "new"}

    with client.pipeline(transaction=False) as pipe:
        queues = lifecycle.extend_leases(pipe, [stale, fresh], time.time() + 300)
        [reply] = pipe.execute()
    assert queues == [email_queue.name] and [m.decode() for m in reply] == [stale.member]
    members = [m.decode() for m in client.zrange(keys.started(email_queue.name), 0, -1)]
    assert members == [fresh.member]  # the stale member was not put back

    late = lifecycle.AttemptResult(ok=True, result_json="99")
    assert lifecycle.finish(client, stale, late, "w-old") is None  # fenced: the new run owns the job
    assert get_job(job_id).status == JobStatus.RUNNING
    assert lifecycle.finish(client, fresh, lifecycle.AttemptResult(ok=True, result_json="3"), "w-new") == "completed"
    assert get_job(job_id).result == 3


def test_a_lease_ended_by_its_own_finish_is_not_reported_stale(jobs_env):
    client = jobs_env.client()
    email_queue.enqueue_job("add", {"a": 1, "b": 1})
    [job] = lifecycle.claim(client, "w", "c", [email_queue.name], 1, 300)
    assert lifecycle.finish(client, job, lifecycle.AttemptResult(ok=True, result_json="2"), "w") == "completed"
    with client.pipeline(transaction=False) as pipe:
        lifecycle.extend_leases(pipe, [job], time.time() + 300)
        [reply] = pipe.execute()
    assert reply == []
    assert client.zcard(keys.started(email_queue.name)) == 0
