"""Queue latency (issue 24, item 3): the age of the oldest job waiting to run, per queue and per
priority list, in get_stats(), HTTP, /metrics, the CLI and the dashboard; a due delayed job counts
while no worker promotes it; a released dependent counts from its release; the cost stays the same
whatever the backlog. Real Redis, real worker and CLI processes, Flask's test client.

Ages are bounded from the test's own clock readings around enqueue and the stats call (the same
host clock the enqueue wrote), never by how fast anything ran."""

from __future__ import annotations

import json
import math
import time

from prometheus_client.parser import text_string_to_metric_families

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform import keys
from core.platform.connection import get_redis
from core.queue.rq_compat import parse_time
from tests.conftest import ADMIN_TOKEN, finished
from tests.readme_blocks import readme_block
from tests.test_dashboard_pages import login
from tests.test_ops_cli import cli

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EPS = 0.002  # stats round ages to 1 ms


def timed_enqueue(priority: str) -> tuple[str, float, float]:
    before = time.time()
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2}, priority=priority)
    return job_id, before, time.time()


def test_latency_is_each_lists_oldest_job_and_every_surface_shows_it(jobs_env, client, start_worker, capsys):
    block = readme_block("Periodic jobs, metrics and the operator CLI", 'print(stats["latency_seconds"], stats["latency_by_priority"])')
    exec(compile(block.code, f"README.md:{block.line}", "exec"), {})
    assert capsys.readouterr().out == "0.0 {'high': 0.0, 'normal': 0.0, 'low': 0.0}\n"  # idle, as the README says
    low = timed_enqueue("low")
    time.sleep(0.3)
    normal = timed_enqueue("normal")
    time.sleep(0.3)
    high = timed_enqueue("high")
    later = [email_queue.enqueue_job("add", {"a": i, "b": 0}) for i in range(5)]  # behind the normal head
    time.sleep(0.2)
    start = time.time()
    stats = email_queue.get_stats()
    end = time.time()
    ages = stats["latency_by_priority"]
    for priority, (_job_id, before, after) in (("low", low), ("normal", normal), ("high", high)):
        assert start - after - EPS <= ages[priority] <= end - before + EPS, (priority, ages)
    assert ages["low"] > ages["normal"] > ages["high"] > 0
    assert stats["latency_seconds"] == ages["low"] and stats["pending_jobs"] == 8

    api = client.get("/api/jobs/queue/email/stats", headers=ADMIN).get_json()["data"]["stats"]
    assert api["latency_seconds"] >= ages["low"] and api["latency_by_priority"]["high"] >= ages["high"]
    assert client.get("/api/jobs/queue/ai/stats", headers=ADMIN).get_json()["data"]["stats"]["latency_seconds"] == 0
    text = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("fikiri_queue_latency_seconds", (("queue", "email"),))] >= ages["low"]
    assert samples[("fikiri_queue_latency_seconds", (("queue", "crm"),))] == 0
    assert samples[("fikiri_queue_priority_latency_seconds", (("priority", "high"), ("queue", "email")))] >= ages["high"]
    assert samples[("fikiri_queue_priority_latency_seconds", (("priority", "low"), ("queue", "ai")))] == 0
    row = json.loads(cli(jobs_env.url, "--json", "stats", "email").stdout)[0]
    assert row["latency_seconds"] >= ages["low"] and row["latency_by_priority"]["normal"] >= ages["normal"]
    table = cli(jobs_env.url, "stats").stdout
    assert "LATENCY_SECONDS" in table.upper(), table
    page = login(client).get("/dashboard/queue/email").get_data(as_text=True)
    assert 'id="queue-latency"' in page and "the oldest waiting job is" in page
    assert "Latency (s)" in client.get("/dashboard/").get_data(as_text=True)

    start_worker("email")
    for job_id in [low[0], normal[0], high[0], *later]:
        job = finished(job_id)
        assert (job.status.value, job.mode) == ("completed", "redis")
    stats = email_queue.get_stats()
    assert stats["latency_seconds"] == 0 and set(stats["latency_by_priority"].values()) == {0}


def test_a_due_delayed_job_counts_while_no_worker_moves_it(jobs_env, start_worker):
    later = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=3600)
    due = email_queue.enqueue_job("add", {"a": 2, "b": 2}, delay=0.3)
    run_at = math.ceil(time.time() + 0.3)  # at or after its run time (the schedule keeps whole seconds)
    time.sleep(run_at + 0.5 - time.time())
    start = time.time()
    stats = email_queue.get_stats()
    assert stats["delayed_jobs"] == 2 and stats["pending_jobs"] == 0
    assert stats["latency_by_priority"] == {"high": 0, "normal": 0, "low": 0}
    assert stats["latency_seconds"] >= start - run_at - EPS > 0  # due since its run time
    start_worker("email")
    job = finished(due)
    assert (job.status.value, job.mode) == ("completed", "redis")
    assert get_job(later).status.value == "delayed"
    assert email_queue.get_stats()["latency_seconds"] == 0  # a job not yet due is not waiting


def test_a_released_dependent_counts_from_its_release_not_its_creation(jobs_env):
    parent = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=3600)
    child = email_queue.enqueue_job("add", {"a": 2, "b": 2}, depends_on=[parent], on_dependency_failure="run")
    created = time.time()
    time.sleep(0.6)
    assert email_queue.get_stats()["latency_seconds"] == 0  # waiting for its dependency, not for a worker
    released = time.time()
    email_queue.cancel_job(parent)
    assert get_job(child).status.value == "pending"
    stats = email_queue.get_stats()
    after = time.time()
    ready = parse_time(get_redis().hget(keys.job(child), "enqueued_at"))
    assert ready >= released - EPS and get_job(child).created_at <= created  # counted from the release
    assert stats["latency_seconds"] == stats["latency_by_priority"]["normal"] <= after - released + EPS


def command_calls() -> dict[str, int]:
    return {name: info["calls"] for name, info in get_redis().info("commandstats").items()}


def commands_of_one_get_stats() -> dict[str, int]:
    before = command_calls()
    email_queue.get_stats()
    after = command_calls()
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0) and name != "cmdstat_info"}


def test_latency_costs_the_same_with_a_few_jobs_or_thousands(jobs_env):
    for priority in ("high", "normal", "low"):
        email_queue.enqueue_job("add", {"a": 1, "b": 1}, priority=priority)
    few = commands_of_one_get_stats()
    connection = get_redis()
    for start in range(0, 20000, 5000):  # a backlog behind each head, pushed straight into the lists
        for key in keys.queue_lists(email_queue.name):
            connection.rpush(key, *[f"bulk-{start + i}" for i in range(5000)])
    many = commands_of_one_get_stats()
    assert few == many, (few, many)
    assert many["cmdstat_lindex"] == 3 and many["cmdstat_hget"] == 3 and many["cmdstat_zrange"] == 5
    assert not {"cmdstat_scan", "cmdstat_keys", "cmdstat_lrange", "cmdstat_sort"} & set(many)
    # 12 counts + 3 heads + 1 first delayed + 3 enqueued_at reads + 4 for job groups (3 rotations, rq:wip)
    assert sum(many.values()) == 23
