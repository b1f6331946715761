"""Redis Sentinel and TLS with real servers: a master, a replica and three sentinels on loopback
(with a failover in the middle of a running batch), and a TLS-only redis-server whose CA and
certificates the test makes with openssl."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.api.tasks import wait_for
from core.config import reload_settings
from core.errors import QueueUnavailableError
from core.platform.connection import get_redis, redis_available, reset_connections
from tests.conftest import ADMIN_TOKEN, _reset_process_state
from tests.ha_servers import SentinelSet, TlsRedis, make_ca_and_server_cert, redis_has_tls
from tests.servers import ROOT, worker_env
from tests.task_fixtures import add

ARTIFACTS = ROOT / "tests" / "artifacts"


def _point_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = worker_env("redis://unused/0", {"JOBS_HEALTH_CHECK_INTERVAL": "0.2", **extra})
    for key in ("REDIS_URL", "JOBS_WORKER_TTL", "JOBS_WORKER_MAINTENANCE_INTERVAL", "JOBS_WORKER_HEARTBEAT_INTERVAL",
                "JOBS_WORKER_HEARTBEAT_GRACE", "JOBS_RETRY_BACKOFF_BASE", "JOBS_TASK_MODULES",
                "JOBS_HEALTH_CHECK_INTERVAL", *extra):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    monkeypatch.setenv("JOBS_ADMIN_TOKEN", ADMIN_TOKEN)
    _reset_process_state()
    return env


@pytest.fixture
def sentinels(monkeypatch, tmp_path) -> Iterator[SentinelSet]:
    topology = SentinelSet().start()
    # No in-process fallback: an enqueue either reached Redis or raised, so "acknowledged" is exact.
    _point_at(monkeypatch, tmp_path, {**topology.env(), "JOBS_FALLBACK_ENABLED": "0"})
    yield topology
    topology.cleanup()
    _reset_process_state()


def test_the_master_is_found_through_the_sentinels(sentinels, start_worker_factory):
    assert redis_available()
    info = get_redis().info("replication")
    assert info["role"] == "master" and get_redis().connection_pool.get_master_address()[1] == sentinels.master_port
    start_worker_factory("unused", "email", env=sentinels.env())
    assert wait_for(add.enqueue(a=20, b=22), timeout=60).result == 42


def test_passwords_for_the_master_and_for_the_sentinels(monkeypatch, tmp_path, start_worker_factory):
    topology = SentinelSet(password="master-secret", sentinel_password="sentinel-secret").start()
    try:
        _point_at(monkeypatch, tmp_path, topology.env())
        assert redis_available()
        start_worker_factory("unused", "email", env=topology.env())
        assert wait_for(add.enqueue(a=1, b=1), timeout=60).result == 2
        # the wrong sentinel password: no master is found, and nothing hangs
        monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "wrong")
        reload_settings()
        reset_connections()
        assert not redis_available()
    finally:
        topology.cleanup()
        _reset_process_state()


def test_a_failover_during_a_running_batch_loses_no_acknowledged_job(sentinels, start_worker_factory):
    """SIGKILL the master while jobs are being enqueued and run. The web side and two workers
    find the promoted replica by themselves. Every enqueue the replica had acknowledged (WAIT 1)
    before the kill completes; the seconds without a writable master are measured."""
    from app import create_app

    client = create_app().test_client()
    for _ in range(2):
        start_worker_factory("unused", "email", env=sentinels.env())
    total, kill_at = 240, 80
    replicated: list[str] = []  # acknowledged by the master and its replica before the kill
    master_only: list[str] = []  # acknowledged by the master, replica not confirmed
    after: list[str] = []  # acknowledged by the promoted master
    refused = 0
    killed_at = first_ok_after_kill = None
    while len(replicated) + len(master_only) + len(after) < total:
        try:
            job_id = add.enqueue(a=len(after), b=1)
        except QueueUnavailableError:
            refused += 1
            time.sleep(0.05)
            continue
        if killed_at is None:
            # WAIT on the connection that just wrote (single thread: the pool hands it back)
            (replicated if get_redis().execute_command("WAIT", 1, 2000) >= 1 else master_only).append(job_id)
            if len(replicated) + len(master_only) == kill_at:
                sentinels.procs["master"].kill(signal.SIGKILL)
                killed_at = time.monotonic()
        else:
            first_ok_after_kill = first_ok_after_kill or time.monotonic()
            after.append(job_id)
    unavailable_s = first_ok_after_kill - killed_at
    assert sentinels.master_port_now() == sentinels.replica_port
    assert client.get("/api/jobs/health").get_json()["data"]["redis"] is True

    deadline = time.monotonic() + 180
    lost = {"replicated": [], "master_only": [], "after": []}
    for name, ids in (("replicated", replicated), ("master_only", master_only), ("after", after)):
        for job_id in ids:
            try:
                job = wait_for(job_id, timeout=max(0.1, deadline - time.monotonic()))
                if job.status != "completed":
                    lost[name].append(job_id)
            except Exception:
                lost[name].append(job_id)
    figures = {"unavailable_seconds": round(unavailable_s, 2), "refused_enqueues": refused,
               "acknowledged": {"replicated": len(replicated), "master_only": len(master_only), "after": len(after)},
               "lost": {k: len(v) for k, v in lost.items()}}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "failover.json").write_text(json.dumps(figures, indent=2))
    print("failover figures:", figures)
    assert lost["replicated"] == [] and lost["after"] == [], figures
    assert len(replicated) >= kill_at - 5, figures  # loopback replication keeps up
    assert unavailable_s < 30, figures


@pytest.fixture
def tls_redis(tmp_path) -> Iterator[TlsRedis]:
    if not redis_has_tls():
        pytest.skip("this redis-server is built without TLS support")
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    server = TlsRedis(make_ca_and_server_cert(certs_dir))
    yield server
    server.cleanup()


def test_tls_with_a_ca_and_a_client_certificate(tls_redis, monkeypatch, tmp_path, start_worker_factory):
    certs = tls_redis.certs
    tls_env = {"REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0", "REDIS_TLS_CA_CERTS": str(certs["ca.crt"]),
               "REDIS_TLS_CERTFILE": str(certs["client.crt"]), "REDIS_TLS_KEYFILE": str(certs["client.key"])}
    _point_at(monkeypatch, tmp_path, tls_env)
    try:
        assert redis_available() and get_redis().ping()
        start_worker_factory(tls_env["REDIS_URL"], "email", env=tls_env)
        job = wait_for(add.enqueue(a=1, b=2), timeout=60)
        assert (job.status, job.result, job.mode) == ("completed", 3, "redis")
        # without the CA the server's certificate is not trusted: no connection, no hang
        monkeypatch.delenv("REDIS_TLS_CA_CERTS")
        reload_settings()
        reset_connections()
        started = time.monotonic()
        assert not redis_available()
        assert time.monotonic() - started < 5
        # and a plain redis:// client cannot talk to a TLS port
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{tls_redis.port}/0")
        reload_settings()
        reset_connections()
        assert not redis_available()
    finally:
        _reset_process_state()


def test_settings_reject_a_malformed_sentinel_list(monkeypatch):
    from core.config import SettingsError

    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379,nohostport")
    with pytest.raises(SettingsError, match="REDIS_SENTINELS must be host:port pairs.*'nohostport'"):
        reload_settings()
    monkeypatch.delenv("REDIS_SENTINELS")
    assert reload_settings().redis_sentinels == ()
