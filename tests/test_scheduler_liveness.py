"""Scheduler liveness (issue 24, item 6): a real periodic scheduler process writes a heartbeat each
pass; admin health and /metrics show scheduler_alive and the last tick; when it stops, a real
worker's maintenance sweep notices within 3 intervals and the alert goes out through the
failure-rate alert channel (a loopback webhook peer and SMTP peer), once per incident."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from core.api.queues import email_queue
from core.platform import keys
from core.platform.connection import get_redis
from core.schedule import heartbeat
from tests.conftest import ADMIN_TOKEN, finished
from tests.peers import JsonHttpPeer
from tests.readme_blocks import readme_block
from tests.servers import ROOT, wait_until, worker_env
from tests.test_ops_scheduler import stop

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
INTERVAL = "0.5"


def start_scheduler(redis_url: str, tmp_path, name: str = "scheduler") -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "scripts/periodic_scheduler.py", "--interval", INTERVAL], cwd=ROOT,
                            env=worker_env(redis_url), stdout=log, stderr=subprocess.STDOUT)


def health(client) -> dict:
    return client.get("/api/jobs/health", headers=ADMIN).get_json()["data"]


def scheduler_samples(client) -> dict[str, float]:
    text = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("fikiri_scheduler_")}


def test_health_and_metrics_follow_a_real_scheduler_process(api_env, client, tmp_path, capsys):
    never = health(client)
    assert (never["scheduler_alive"], never["scheduler_last_tick"]) == (False, None)
    assert "scheduler_alive" not in client.get("/api/jobs/health").get_json()["data"]  # admins only
    assert scheduler_samples(client) == {"fikiri_scheduler_alive": 0, "fikiri_scheduler_last_tick_seconds": 0}
    assert heartbeat.silent_incident() is None  # no scheduler ever ran here: nothing to miss

    proc = start_scheduler(api_env.url, tmp_path)
    try:
        first = wait_until(lambda: (h := health(client))["scheduler_alive"] and h, timeout=30,
                           message="the scheduler's first tick")
        tick = first["scheduler_last_tick"]
        wait_until(lambda: health(client)["scheduler_last_tick"] > tick, timeout=10, message="a second tick")
        status = heartbeat.scheduler_status()
        assert status["interval"] == float(INTERVAL) and status["pid"] == proc.pid
        assert 0 < get_redis().ttl(keys.scheduler_heartbeat()) <= heartbeat.HEARTBEAT_TTL
        samples = scheduler_samples(client)
        assert samples["fikiri_scheduler_alive"] == 1 and samples["fikiri_scheduler_last_tick_seconds"] >= tick
        block = readme_block("Periodic jobs, metrics and the operator CLI", "print(scheduler_status())")
        exec(compile(block.code, f"README.md:{block.line}", "exec"), {})
        printed = capsys.readouterr().out
        assert printed.startswith("{'alive': True, 'last_tick': ") and f"'pid': {proc.pid}" in printed
    finally:
        assert stop(proc) == 0
    last = heartbeat.scheduler_status()["last_tick"]
    dead = wait_until(lambda: (h := health(client))["scheduler_alive"] is False and h, timeout=15,
                      message="health to see the scheduler gone after 3 intervals")
    assert dead["scheduler_last_tick"] == last  # the last tick stays readable after it died
    assert heartbeat.scheduler_status()["silent_for"] > 3 * float(INTERVAL)
    assert scheduler_samples(client) == {"fikiri_scheduler_alive": 0, "fikiri_scheduler_last_tick_seconds": last}


def test_a_silent_scheduler_alerts_once_per_incident(jobs_env, smtp, start_worker, tmp_path, monkeypatch):
    hook = JsonHttpPeer(lambda body: {"ok": True})
    monkeypatch.setenv("JOBS_ALERT_TO", "ops@example.com")
    monkeypatch.setenv("JOBS_ALERT_WEBHOOK_URL", hook.url + "/alerts")
    from core.config import reload_settings

    reload_settings()
    try:
        start_worker("email")  # inherits the alert settings; sweeps every 2 s (tests/servers.py)
        proc = start_scheduler(jobs_env.url, tmp_path)
        wait_until(lambda: heartbeat.scheduler_status()["alive"], timeout=30, message="the scheduler's first tick")
        assert stop(proc) == 0
        [alert] = wait_until(lambda: hook.requests, timeout=30, message="the scheduler-silent alert webhook")
        body = alert["body"]
        status = heartbeat.scheduler_status()
        assert alert["path"] == "/alerts" and body["event"] == "scheduler.silent"
        assert (body["last_tick"], body["missed_ticks"], body["interval"]) == (status["last_tick"], 3, 0.5)
        assert body["silent_for"] > 1.5 and body["pid"] == proc.pid
        mail = wait_until(lambda: smtp.messages, timeout=20, message="the alert mail")
        assert [m["to"] for m in mail] == [["ops@example.com"]]
        assert "periodic scheduler is silent" in mail[0]["data"]
        incident = heartbeat.incident_id(status)
        assert get_redis().get(keys.scheduler_alert()).decode() == incident
        check = finished(f"check-{incident}")  # the job the worker's sweep enqueued
        assert (check.status.value, check.mode) == ("completed", "redis")
        assert check.result["alert"]["incident"] == incident

        again = finished(email_queue.enqueue_job("check_scheduler_liveness", {}))  # the same silence
        assert again.result["alert"] is None and again.result["scheduler"]["alive"] is False
        assert heartbeat.silent_incident() is None  # the sweeps enqueue nothing more for it
        assert len(hook.requests) == 1 and len(smtp.messages) == 1

        proc = start_scheduler(jobs_env.url, tmp_path)  # back, then gone again after the cooldown
        wait_until(lambda: heartbeat.scheduler_status()["alive"], timeout=30, message="the scheduler back")
        assert finished(email_queue.enqueue_job("check_scheduler_liveness", {})).result["alert"] is None  # alive
        assert stop(proc) == 0
        get_redis().delete(keys.scheduler_alert())  # what the cooldown's expiry does
        wait_until(lambda: len(hook.requests) == 2, timeout=30, message="the next incident's alert")
        assert hook.requests[1]["body"]["last_tick"] > body["last_tick"]
    finally:
        hook.stop()
