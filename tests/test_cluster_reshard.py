"""Resharding in cluster mode (issue 25, item 5): the ``{fikiri}`` slot moves between masters
while jobs are enqueued and run, and every acknowledged job runs exactly once.

A slot moves key by key (``MIGRATE``), so for a while some of its keys are on the old master and
some on the new one, and the old master answers ``ASK`` for the ones it no longer has. A script
that met such a key half-way would stop after its earlier writes (Redis scripts do not roll
back): a claim that popped an id and could not read its job. core/platform/cluster.py makes every
script and every pipeline refuse to start while their slot migrates instead, and the client waits
the move out; these loops prove it on a real 3-master cluster with the default worker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.config import reload_settings
from core.platform import keys
from core.platform.cluster import SlotMoving
from core.platform.connection import get_redis, reset_connections
from core.queue import lifecycle
from core.queue.job_model import JobStatus
from tests.cluster_servers import RedisClusterSet
from tests.servers import WorkerProcess, wait_until
from tests.test_cluster_mode import TAG, _point_at

MOVES = 6  # twice around the ring of 3 masters: every master imports the slot twice


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    nodes = RedisClusterSet(masters=3, replicas=0).start()
    yield nodes
    nodes.cleanup()


class Producer(threading.Thread):
    """Enqueues ``file_mark`` jobs one after another until told to stop (a web process's flow)."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path, self.items, self.errors = path, {}, []
        self.stopping = threading.Event()

    def run(self) -> None:
        count = 0
        while not self.stopping.is_set():
            item = f"j{count}"
            try:
                self.items[email_queue.enqueue_job("file_mark", {"path": self.path, "item": item})] = item
            except Exception as exc:  # noqa: BLE001 - surfaced by the test, not swallowed
                self.errors.append(f"{item}: {type(exc).__name__}: {exc}")
            count += 1
            time.sleep(0.003)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def test_jobs_flow_through_three_reshards_of_their_slot_none_lost_none_run_twice(
        cluster: RedisClusterSet, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for node in cluster.nodes:
        node.client().flushall()
    _point_at(cluster, cluster.url, monkeypatch, tmp_path)
    slot = key_slot(TAG.encode())
    runs = tmp_path / "runs.txt"
    worker = WorkerProcess(cluster.url, [], env={"REDIS_CLUSTER": "1"}, log_path=tmp_path / "worker.log")
    producer = Producer(str(runs))
    moved: list[int] = []
    try:
        producer.start()
        wait_until(lambda: runs.exists() and len(runs.read_text().split()) >= 50, timeout=30,
                   message="jobs to be flowing before the first move")
        for _ in range(MOVES):
            owner = cluster.node_for(TAG)
            target = next(node for node in cluster.masters() if node.port != owner.port)
            moved.append(cluster.migrate_slot(slot, target, batch=5, pause=0.005))
            time.sleep(0.5)  # jobs flow on the new master before the next move
        producer.stop()
        assert not producer.errors, f"enqueues failed across the moves: {producer.errors[:5]}"
        acknowledged = dict(producer.items)
        try:
            wait_until(lambda: all((job := get_job(j)) is not None and job.status == JobStatus.COMPLETED
                                   for j in acknowledged), timeout=90, interval=0.5,
                       message="every acknowledged job to complete after the moves")
        except AssertionError as exc:
            states = Counter(str(job.status) if (job := get_job(j)) else "missing" for j in acknowledged)
            raise AssertionError(f"{exc}; job states: {dict(states)}") from None
        modes = Counter(get_job(j).mode for j in acknowledged)
        attempts = Counter(get_job(j).retry_count for j in acknowledged)
        stats = email_queue.get_stats()
    finally:
        producer.stop()
        worker.stop()
        monkeypatch.undo()
        reload_settings()
        reset_connections()
    assert all(count > 50 for count in moved), f"the moves carried too few keys to overlap the flow: {moved}"
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log, f"the worker met an error across the moves: {log[log.index('Traceback'):][:2000]}"
    assert modes == {"redis": len(acknowledged)}, f"a reshard is not a lost connection: {modes}"
    assert not (tmp_path / "fallback-spool.db").exists()
    assert attempts == {0: len(acknowledged)}, f"a reshard cost jobs an attempt (retries: {attempts})"
    assert stats["abandoned_jobs"] == 0 and stats["failed_jobs"] == 0, f"a reshard stopped a job half-way: {stats}"
    lines = Counter(runs.read_text().split())
    assert set(lines) == set(acknowledged.values()), "a job ran that nobody acknowledged, or one never ran"
    twice = {item: n for item, n in lines.items() if n > 1}
    assert not twice, f"jobs ran more than once across a reshard: {twice}"


def test_a_claim_that_would_meet_a_moved_job_is_refused_whole_and_waits_the_move_out(
        cluster: RedisClusterSet, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The exact case the guard exists for: the slot migrates and the job's hash has already moved,
    but the queue list has not. The claim would pop the id, then fail to read the job. Instead it is
    refused before it starts, waited out for JOBS_CLUSTER_MOVE_WAIT, and then counts as a lost
    connection; the id stays in the list, and the job runs once the move ends."""
    for node in cluster.nodes:
        node.client().flushall()
    _point_at(cluster, cluster.url, monkeypatch, tmp_path, {"JOBS_CLUSTER_MOVE_WAIT": "0.5"})
    slot = key_slot(TAG.encode())
    job_id = email_queue.enqueue_job("add", {"a": 2, "b": 3})
    owner = cluster.node_for(TAG)
    target = next(node for node in cluster.masters() if node.port != owner.port)
    source = cluster.begin_move(slot, target)
    try:
        cluster.move_keys(slot, source, target, names=[keys.job(job_id)])
        held = {k.decode() for k in source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10_000)}
        lists = [name for name in keys.queue_lists(email_queue.name) if name in held]  # others answer ASK now
        before = {name: source.client().lrange(name, 0, -1) for name in lists}
        assert job_id.encode() in sum(before.values(), []) and keys.job(job_id) not in held
        started = time.monotonic()
        with pytest.raises(SlotMoving):
            lifecycle.claim(get_redis(), "reshard-test", "c.", [email_queue.name], 1, 30.0)
        assert time.monotonic() - started >= 0.5, "a refused call is sent again until JOBS_CLUSTER_MOVE_WAIT"
        assert {name: source.client().lrange(name, 0, -1) for name in lists} == before, "the claim ran half-way"
    finally:
        cluster.move_keys(slot, source, target)
        cluster.end_move(slot, source, target)
    worker = WorkerProcess(cluster.url, [], env={"REDIS_CLUSTER": "1"}, log_path=tmp_path / "worker.log")
    try:
        assert email_queue.wait_for(job_id, timeout=30).result == 5
        assert get_job(job_id).retry_count == 0 and get_job(job_id).mode == "redis"
    finally:
        worker.stop()
        monkeypatch.undo()
        reload_settings()
        reset_connections()
