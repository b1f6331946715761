"""What we rely on from RQ's layout, checked against the installed RQ (core/rq_compat.py).

Our scripts write jobs in RQ's hash layout and RQ's key names so ``rq info`` and RQ's ``Job.fetch``
see them. An RQ upgrade that changes any of these facts must fail here, not corrupt jobs."""

from __future__ import annotations

from rq import Queue
from rq.job import JOB_ID_PATTERN, Job
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer
from rq.utils import _TIMESTAMP_FORMAT

from core import keys, rq_compat
from core.redis_queues import email_queue


def test_pinned_rq_version():
    assert rq_compat.rq_version() == rq_compat.PINNED_RQ_VERSION, (
        "RQ changed: re-check core/rq_compat.py and core/lua against the new release, then update the pin")


def test_layout_facts_match_rq():
    assert rq_compat.TIME_FORMAT == _TIMESTAMP_FORMAT
    assert rq_compat.JOB_ID_PATTERN == JOB_ID_PATTERN.pattern


def test_key_names_are_rqs(jobs_env):
    queue = Queue(email_queue.name, connection=jobs_env.client(), serializer=JSONSerializer)
    assert keys.queue(email_queue.name) == queue.key
    assert keys.job("abc") == Job.key_for("abc")
    registries = {
        keys.scheduled: ScheduledJobRegistry, keys.started: StartedJobRegistry, keys.finished: FinishedJobRegistry,
        keys.failed: FailedJobRegistry, keys.canceled: CanceledJobRegistry,
    }
    for ours, registry in registries.items():
        assert ours(email_queue.name) == registry(queue=queue).key


def test_rq_reads_our_jobs_and_counts_our_queues(jobs_env):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2}, timeout=9)
    client = jobs_env.client()
    job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
    assert (job.func_name, job.kwargs, job.timeout, job.origin) == ("add", {"a": 1, "b": 2}, 9, email_queue.name)
    assert job.get_status().value == "queued"
    queue = Queue(email_queue.name, connection=client, serializer=JSONSerializer)
    assert queue.count == 1 and queue.job_ids == [job_id]
    # our data field is plain JSON, readable with redis-cli
    assert client.hget(keys.job(job_id), "data") == b'["add",null,[],{"a":1,"b":2}]'
