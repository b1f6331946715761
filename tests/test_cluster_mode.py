"""Cluster mode (issue 25, first step): ``REDIS_CLUSTER=1`` on a real Redis Cluster on loopback.

Every key carries ``{fikiri}``, so the whole installation lives in one slot on one master and the
lifecycle scripts run unchanged; the client follows that slot's master through a failover
(core/platform/cluster.py). These tests run the default worker (``fikiri-worker``, no flags) on
3-master clusters, with and without a replica per master.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import requests

from core.api.jobs import cancel_job, get_job
from core.api.queues import email_queue
from core.config import SettingsError, reload_settings
from core.errors import JobsError
from core.platform.connection import get_redis, reset_connections
from core.queue.job_model import JobStatus
from core.queue.task_registry import load_task_modules
from tests.cluster_servers import RedisClusterSet
from tests.conftest import TEST_ENV_KEYS, _reset_process_state
from tests.servers import ROOT, WorkerProcess, wait_until, worker_env

TAG = "{fikiri}"


def _point_at(cluster: RedisClusterSet, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    env = worker_env(url, {"REDIS_CLUSTER": "1", **(extra or {})})
    for key in (*TEST_ENV_KEYS, "REDIS_CLUSTER", *(extra or {})):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("JOBS_FALLBACK_SPOOL", str(tmp_path / "fallback-spool.db"))
    _reset_process_state()
    load_task_modules()
    return env


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    nodes = RedisClusterSet(masters=3, replicas=0).start()
    yield nodes
    nodes.cleanup()


@pytest.fixture
def on_cluster(cluster: RedisClusterSet, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[RedisClusterSet]:
    for node in cluster.nodes:
        node.client().flushall()
    _point_at(cluster, cluster.url, monkeypatch, tmp_path)
    yield cluster
    assert not (tmp_path / "fallback-spool.db").exists(), "a job went to the fallback on a healthy cluster"
    monkeypatch.undo()
    reload_settings()
    reset_connections()


def _keys_by_node(cluster: RedisClusterSet) -> dict[int, list[str]]:
    return {node.port: [k.decode() for k in node.client().scan_iter(count=1000)] for node in cluster.nodes}


def test_the_lifecycle_runs_on_a_cluster_with_every_key_in_one_slot(on_cluster: RedisClusterSet, tmp_path) -> None:
    done_key = f"{TAG}:test:done"  # a task's own keys need the tag too on a cluster
    plain = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    flaky = email_queue.enqueue_job("fail_times", {"key": f"{TAG}:test:flaky", "times": 1})
    grouped = [email_queue.enqueue_job("group_mark", {"key": done_key, "item": f"g{i}", "tenant": f"t{i % 2}"})
               for i in range(6)]
    urgent = email_queue.enqueue_job("mark_done", {"key": done_key, "item": "urgent"}, priority="high")
    later = email_queue.enqueue_job("mark_done", {"key": done_key, "item": "never"}, delay=600)
    cancel_job(later)
    failing = email_queue.enqueue_job("always_fail", {"message": "no such mailbox"})
    assert all(get_job(j).mode == "redis" for j in (plain, flaky, urgent, failing, *grouped))

    worker = WorkerProcess(on_cluster.url, [], env={"REDIS_CLUSTER": "1"}, log_path=tmp_path / "worker.log")
    try:
        assert email_queue.wait_for(plain, timeout=30).result == 5
        wait_until(lambda: get_job(failing).status == JobStatus.FAILED, timeout=30)
        wait_until(lambda: all(get_job(j).status == JobStatus.COMPLETED for j in (flaky, urgent, *grouped)),
                   timeout=30, message="every job to complete on the cluster")
    finally:
        worker.stop()
    assert get_job(flaky).retry_count == 1
    assert get_job(later).status == JobStatus.CANCELED
    assert "no such mailbox" in (get_job(failing).error or "")
    members = {m.decode() for m in get_redis().smembers(done_key)}
    assert members == {"urgent", *(f"g{i}" for i in range(6))}
    stats = email_queue.get_stats()
    assert stats["completed_jobs"] == 9 and stats["failed_jobs"] == 1 and stats["canceled_jobs"] == 1

    by_node = _keys_by_node(on_cluster)
    holding = [port for port, names in by_node.items() if names]
    assert len(holding) == 1, f"the keys are spread over {holding}: one slot means one master"
    names = by_node[holding[0]]
    assert holding[0] == on_cluster.node_for(TAG).port
    untagged = [n for n in names if not n.startswith(f"{TAG}:")]
    assert not untagged, f"keys without the hash tag: {untagged[:10]}"
    assert f"{TAG}:rq:job:{plain}" in names and f"{TAG}:rq:queues" in names and f"{TAG}:events" in names


def test_a_key_outside_the_slot_is_an_error_not_an_outage(on_cluster: RedisClusterSet) -> None:
    """A MOVED for another slot is a bug (a key without the tag): it must not look like a lost
    connection, or it would send jobs to the fallback and hide the bug."""
    probe_key = next(f"stray:{i}" for i in range(1000)
                     if on_cluster.node_for(f"stray:{i}").port != on_cluster.node_for(TAG).port)
    with pytest.raises(redis.exceptions.MovedError) as caught:
        get_redis().get(probe_key)
    assert not isinstance(caught.value, redis.ConnectionError)


def test_cluster_and_sentinels_together_are_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_CLUSTER", "1")
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379")
    with pytest.raises(SettingsError, match="REDIS_CLUSTER=1 and REDIS_SENTINELS"):
        reload_settings()
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def replicated_cluster() -> Iterator[RedisClusterSet]:
    nodes = RedisClusterSet(masters=3, replicas=1).start()
    yield nodes
    nodes.cleanup()


def test_three_master_failovers_lose_no_acknowledged_job(replicated_cluster: RedisClusterSet,
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Three times: 100 jobs acknowledged with WAIT 1 (on the replica), kill -9 of the master
    holding the slot while the worker runs them, the replica promoted, every job completed, the
    old master back as the new one's replica. The first killed node is the one REDIS_URL names, so
    the client and the worker must have learnt the others. Every run beyond one per job is a
    stall the sweep recorded, never a silent second run."""
    cluster = replicated_cluster
    url = f"redis://127.0.0.1:{cluster.node_for(TAG).port}/0"
    _point_at(cluster, url, monkeypatch, tmp_path, {"JOBS_ENQUEUE_DURABILITY": "replica"})
    key = f"{TAG}:test:failover"
    acknowledged: list[str] = []
    worker = WorkerProcess(url, [], env={"REDIS_CLUSTER": "1"}, log_path=tmp_path / "worker.log")
    try:
        for cycle in range(3):
            batch = [email_queue.enqueue_job("email_mark_done", {"key": key, "item": f"c{cycle}-{i}", "seconds": 0.02})
                     for i in range(100)]
            assert all(get_job(j).mode == "redis" for j in batch)
            acknowledged += batch
            _fail_over_under(cluster, key, list(acknowledged), cycle + 1)
        runs = int(get_redis().get(f"{key}:runs"))
        stats = email_queue.get_stats()
    finally:
        worker.stop()
        monkeypatch.undo()
        reload_settings()
        reset_connections()
    members = {m.decode() for m in get_redis_for(cluster).smembers(key)}
    assert members == {f"c{c}-{i}" for c in range(3) for i in range(100)}
    assert stats["completed_jobs"] == 300
    assert runs - 300 <= stats["abandoned_jobs"] + stats["retried_jobs"], "a second run nobody recorded"


def _fail_over_under(cluster: RedisClusterSet, key: str, acknowledged: list[str], nth: int) -> None:
    """Kill -9 the slot's master once the worker is under way, wait for the promotion and every
    acknowledged job to complete, then bring the old master back as a replica in sync."""
    wait_until(lambda: get_redis().scard(key) >= len(acknowledged) - 80, timeout=30,
               message="the worker to be under way")
    master = cluster.node_for(TAG)
    master.kill(signal.SIGKILL)
    wait_until(lambda: cluster.node_for(TAG).port != master.port, timeout=30, interval=0.2,
               message=f"a replica to be promoted (failover {nth})")
    reset_connections()
    try:
        wait_until(lambda: _completed(acknowledged), timeout=90, interval=0.5,
                   message=f"every acknowledged job to complete after failover {nth}")
    except AssertionError as exc:  # say which state the stragglers are in (a canceled one was a bug)
        states = Counter(str(job.status) if (job := get_job(j)) else "missing" for j in acknowledged)
        raise AssertionError(f"{exc}; job states: {dict(states)}") from None
    master.start()  # back as the new master's replica: WAIT 1 can be met again
    promoted = cluster.node_for(TAG)
    wait_until(lambda: cluster._replicas_online(promoted) >= 1, timeout=60, interval=0.3,
               message="the old master to rejoin as a replica in sync")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.jobs", *args], cwd=ROOT,
                          env=worker_env(url, {"REDIS_CLUSTER": "1"}), capture_output=True, text=True, timeout=60)


def _completed(ids: list[str]) -> bool:
    try:
        return all((job := get_job(j)) is not None and job.status == JobStatus.COMPLETED for j in ids)
    except JobsError:
        return False  # the promoted master is not reachable yet (503): ask again


def get_redis_for(cluster: RedisClusterSet):
    return cluster.node_for(TAG).client()


def test_periodic_jobs_and_the_stats_run_on_a_cluster(on_cluster: RedisClusterSet) -> None:
    """rq-scheduler's keys are class attributes of its own; ours carry the tag on a cluster too."""
    from core.schedule.periodic import JsonScheduler, list_periodic_jobs, register_periodic, register_periodic_jobs

    now = time.time()
    registered = register_periodic_jobs(now=now)
    assert registered and all(entry["id"] for entry in registered)
    register_periodic("cluster-note", "record_run", every=60, payload={"key": f"{TAG}:test:periodic"}, now=now)
    assert any(entry["id"].endswith("cluster-note") for entry in list_periodic_jobs())
    due = JsonScheduler().run_due(now=now + 61)
    note = [j for j in due if get_job(j).task_name == "record_run"]
    assert len(note) == 1 and get_job(note[0]).status == JobStatus.PENDING
    names = {n for ns in _keys_by_node(on_cluster).values() for n in ns}
    assert f"{TAG}:rq:scheduler:scheduled_jobs" in names and not [n for n in names if not n.startswith(TAG)]


def test_the_api_through_gunicorn_on_a_cluster(on_cluster: RedisClusterSet, tmp_path) -> None:
    """What an operator and a web handler meet: health, a job's status, the queue's stats and
    /metrics, served by gunicorn with REDIS_CLUSTER=1 and the job run by the default worker."""
    from tests.api_server import ApiServer
    from tests.conftest import ADMIN_TOKEN, SECRET_KEY

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    server = ApiServer(on_cluster.url, {"REDIS_CLUSTER": "1", "JOBS_ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": SECRET_KEY},
                       tmp_path / "gunicorn.log")
    worker = WorkerProcess(on_cluster.url, [], env={"REDIS_CLUSTER": "1"}, log_path=tmp_path / "worker.log")
    try:
        job_id = email_queue.enqueue_job("add", {"a": 40, "b": 2})
        def final() -> dict | bool:
            data = requests.get(server.url(f"/api/jobs/{job_id}"), headers=admin, timeout=5).json()["data"]
            return data["status"] == "completed" and data
        data = wait_until(final, timeout=30, interval=0.2)
        assert data["result"] == 42 and data["mode"] == "redis"
        health = requests.get(server.url("/api/jobs/health"), timeout=5)
        assert health.status_code == 200
        stats = requests.get(server.url("/api/jobs/queue/email/stats"), headers=admin, timeout=5)
        assert stats.status_code == 200, stats.text
        metrics = requests.get(server.url("/metrics"), headers=admin, timeout=5)
        assert metrics.status_code == 200 and "fikiri" in metrics.text
        status = _cli(on_cluster.url, "--json", "status", job_id)  # the operator CLI, a process of its own
        assert status.returncode == 0 and json.loads(status.stdout)["result"] == 42, status.stderr
        stats_cli = _cli(on_cluster.url, "--json", "stats", "email")
        assert json.loads(stats_cli.stdout)[0]["completed_jobs"] == 1, stats_cli.stderr
    finally:
        worker.stop()
        server.stop()
