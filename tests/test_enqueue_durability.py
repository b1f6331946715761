"""Durable acknowledgements (issue 21 item 7): with JOBS_ENQUEUE_DURABILITY=replica, enqueue returns
only after WAIT 1 confirmed a replica has the job; without a replica in time it raises a
DurabilityError naming the setting. A real primary and a real replica (redis-server, REPLICAOF)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from core.api.queues import email_queue
from core.config import SettingsError, reload_settings
from core.errors import DurabilityError
from core.platform import keys
from core.platform.connection import reset_connections
from tests.servers import RedisServer, wait_until


def _replica_of(primary: RedisServer) -> RedisServer:
    replica = RedisServer().start()
    replica.client().replicaof("127.0.0.1", primary.port)
    wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", timeout=30,
               message="the replica to sync")
    return replica


def _durable(monkeypatch, timeout: str = "2") -> None:
    monkeypatch.setenv("JOBS_ENQUEUE_DURABILITY", "replica")
    monkeypatch.setenv("JOBS_ENQUEUE_DURABILITY_TIMEOUT", timeout)
    reload_settings()
    reset_connections()


def test_an_acknowledged_job_is_already_on_the_replica(jobs_env, monkeypatch):
    replica = _replica_of(jobs_env)
    try:
        _durable(monkeypatch)
        for i in range(20):
            job_id = email_queue.enqueue_job("add", {"a": i, "b": 1})
            # no wait: WAIT returned only once the replica had processed the write
            assert replica.client().exists(keys.job(job_id)) == 1
        ids = email_queue.enqueue_many("add", [{"a": i, "b": 2} for i in range(50)])
        assert all(replica.client().exists(keys.job(j)) for j in ids)
    finally:
        replica.cleanup()


def test_without_a_replica_enqueue_raises_a_clear_error_naming_the_setting(jobs_env, monkeypatch):
    _durable(monkeypatch, timeout="0.2")
    began = time.monotonic()
    with pytest.raises(DurabilityError) as caught:
        email_queue.enqueue_job("add", {"a": 1, "b": 1})
    assert time.monotonic() - began < 5  # bounded by the timeout, never a hang
    error = caught.value
    assert error.http_status == 503 and error.code == "not_durable"
    assert "JOBS_ENQUEUE_DURABILITY=replica" in error.message and "0.2s" in error.message
    assert "accepted values: none, replica" in error.message.lower()
    assert jobs_env.client().llen(keys.queue(email_queue.name)) == 1  # written on the primary (said so)


def test_a_stalled_replica_times_out_the_same_way(jobs_env, monkeypatch):
    replica = _replica_of(jobs_env)
    try:
        _durable(monkeypatch, timeout="0.3")
        email_queue.enqueue_job("add", {"a": 1, "b": 1})
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DurabilityError):
                email_queue.enqueue_job("add", {"a": 2, "b": 2})
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
    finally:
        replica.cleanup()


def test_an_unknown_durability_is_refused_at_start_with_the_accepted_values(monkeypatch):
    monkeypatch.setenv("JOBS_ENQUEUE_DURABILITY", "quorum")
    with pytest.raises(SettingsError) as caught:
        reload_settings()
    assert "JOBS_ENQUEUE_DURABILITY" in str(caught.value) and "none, replica" in str(caught.value)
    monkeypatch.delenv("JOBS_ENQUEUE_DURABILITY")
    reload_settings()


def test_the_http_api_answers_503_not_durable_never_a_500(client, monkeypatch):
    from tests.conftest import ADMIN_TOKEN

    _durable(monkeypatch, timeout="0.1")
    answer = client.post("/api/jobs/ai/trigger", json={"prompt": "hi", "user_id": "u1"},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 503
    error = answer.get_json()["error"]
    assert error["code"] == "not_durable" and "JOBS_ENQUEUE_DURABILITY=replica" in error["message"]
