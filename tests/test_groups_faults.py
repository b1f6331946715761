"""The fault loops with groups on, mixed: grouped jobs under group_concurrency, a grouped tenant
at high priority without a limit and ungrouped jobs share one queue, served by four worker classes
(prefork, threaded, fork, simple) while workers are SIGKILLed and Redis (AOF) is restarted in turn.
Nothing is lost, every extra run is a counted stall, group_concurrency holds from the spans each run
records in Redis time, and no group key is left behind. Real redis-server, real worker processes."""

from __future__ import annotations

import random
import time

import pytest

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform.connection import reset_connections
from core.queue.job_model import JobStatus
from tests.servers import RedisServer, point_this_process_at, wait_until
from tests.test_groups import group_keys, spans_within_limit_on

CLASSES = [("--concurrency", "2"), ("--worker-class", "threaded", "--concurrency", "4"),
           ("--worker-class", "fork"), ("--worker-class", "simple")]


def _enqueue(key: str, tenant: str, n: int, **options) -> list[str]:
    return email_queue.enqueue_many("group_mark_durable", [{"key": key, "item": f"{tenant or 'none'}-{i}",
                                                            "tenant": tenant, "seconds": 0.05} for i in range(n)],
                                    **options)


@pytest.mark.timeout(600)
def test_mixed_loop_sigkills_and_aof_restarts_with_grouped_and_ungrouped_jobs(monkeypatch, start_worker_factory):
    server = RedisServer(appendonly=True).start()
    try:
        point_this_process_at(server, monkeypatch)
        key, capped = "test:gm", ["c0", "c1", "c2"]
        ids = [j for tenant in capped for j in _enqueue(key, tenant, 40, group_concurrency=2)]
        high = _enqueue(key, "vip", 40, priority="high")
        plain = _enqueue(key, "", 40)
        ids += high + plain
        total = len(ids)
        assert get_job(plain[0]).group is None and get_job(high[0]).group == "vip"
        workers = [start_worker_factory(server.url, "email", *CLASSES[0]),
                   start_worker_factory(server.url, "email", *CLASSES[1])]
        client = server.client()
        wait_until(lambda: client.scard(key) >= 10, timeout=60, message="the workers to start")
        rng = random.Random(2323)
        for fault in range(10):
            time.sleep(rng.uniform(0.3, 0.8))
            if fault % 2:
                server.restart()
            else:
                workers.pop(rng.randrange(len(workers))).kill_hard()
                workers.append(start_worker_factory(server.url, "email", *CLASSES[(fault // 2) % len(CLASSES)]))
        client = server.client()
        assert client.scard(key) < total, "the work ended before the faults did"
        wait_until(lambda: client.scard(key) == total, timeout=240, interval=0.5, message=f"all {total} items")
        reset_connections()
        wait_until(lambda: all((j := get_job(i)) is not None and j.status.is_final for i in ids), timeout=120,
                   interval=0.5, message="every job to end")
        jobs = [get_job(i) for i in ids]
        assert {j.status for j in jobs} == {JobStatus.COMPLETED}
        assert {j.group for j in jobs} == {"c0", "c1", "c2", "vip", None}
        wait_until(lambda: group_keys(client) == [], timeout=120, interval=0.5,
                   message="running counts back to 0, idle groups gone")
        runs, _all_tenants = spans_within_limit_on(client, key)  # vip and ungrouped runs have no limit
        assert runs >= total
        capped_runs = [e.decode() for e in client.lrange(f"{key}:spans", 0, -1) if e.decode().split("|")[0] in capped]
        capped_worst = _worst_overlap(capped_runs)
        assert capped_worst <= 2, capped_worst
        stats = email_queue.get_stats()
        assert stats["pending_jobs"] == stats["active_jobs"] == stats["failed_jobs"] == 0
        extra = int(client.get(f"{key}:started")) - total
        stalls, retries = sum(j.stalls for j in jobs), sum(j.retry_count for j in jobs)
        assert extra <= stalls + retries, (extra, stalls, retries)  # every extra run is a counted stall or retry
        print(f"mixed group fault loop: 5 kills, 5 restarts, {stalls} stalls, {retries} retries, {extra} extra runs, "
              f"worst overlap of a capped group {capped_worst}, 0 lost")
    finally:
        server.cleanup()


def _worst_overlap(spans: list[str]) -> int:
    """The most runs of one tenant that overlapped in time, from ``tenant|start|end`` entries."""
    points: dict[str, list[tuple[float, int]]] = {}
    for entry in spans:
        tenant, start, end = entry.split("|")
        points.setdefault(tenant, []).extend([(float(start), 1), (float(end), -1)])
    worst = 0
    for edges in points.values():
        running = 0
        for _at, step in sorted(edges):
            running += step
            worst = max(worst, running)
    return worst
