"""Per-user daily digests over a loopback SMTP peer (one mail per user per day, none when nothing
is new), and failure-rate alerts to operators' mail and a webhook peer, one per incident;
real Redis, real worker processes, SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from ai_assistant.thread_jobs import process_thread_ai
from core.api.queues import email_queue
from core.config import get_settings, reload_settings
from core.platform import keys
from core.platform.connection import get_redis
from core.platform.db import session_scope
from core.queue.task_metrics import get_task_history
from email_automation.gmail_sync_jobs import connect_account
from email_automation.models import EmailMessage, EmailThread
from tests.conftest import finished
from tests.peers import JsonHttpPeer
from tests.servers import wait_until


def test_each_user_gets_one_digest_a_day_and_none_when_nothing_is_new(domain_env, smtp, start_worker):
    connect_account("u1", "ada@example.com", "a", "r")
    connect_account("u2", "bob@example.com", "a", "r")
    with session_scope() as session:
        session.add(EmailMessage(user_id="u1", gmail_id="g1", thread_id="t1", sender="Carol <carol@example.com>",
                                 subject="Contract", snippet="Please sign the contract by Monday.",
                                 internal_date=time.time() - 3600))
        session.add(EmailMessage(user_id="u2", gmail_id="g2", thread_id="t2", sender="x@example.com",
                                 subject="Old news", snippet="From last week.", internal_date=time.time() - 8 * 86_400))
    process_thread_ai("u1", "t1")
    process_thread_ai("u2", "t2", tasks=["summarize"])  # stamps the thread now, but u2 has no new mail...
    with session_scope() as session:  # ... and an older analysis: nothing to report for u2
        session.execute(update(EmailThread).where(EmailThread.user_id == "u2").values(ai_processed_at=1.0))
    start_worker("email")
    fan_out = finished(email_queue.enqueue_job("send_user_digests", {}))
    assert fan_out.result["queued"] == 2, fan_out.error
    first = {user: finished(job_id) for user, job_id in fan_out.result["jobs"].items()}
    assert first["u1"].result["status"] == "sent" and first["u1"].result["threads"] == 1
    assert first["u2"].result == {"user_id": "u2", "status": "skipped", "reason": "nothing new in the last 24 hours"}
    assert [m["to"] for m in smtp.messages] == [["ada@example.com"]]
    body = smtp.messages[0]["data"]
    assert "Your Fikiri digest for" in body and "New messages in the last 24 hours: 1" in body
    assert "[ ] Please sign the contract by Monday." in body and "Contract" in body
    again = finished(email_queue.enqueue_job("send_user_digests", {}))  # same day: same job ids
    assert again.result["jobs"] == fan_out.result["jobs"]
    assert finished(again.result["jobs"]["u1"]).result["status"] == "already_sent"
    assert len(smtp.messages) == 1


@pytest.fixture
def alerting(domain_env, smtp, monkeypatch):
    hook = JsonHttpPeer(lambda body: {"ok": True})
    for key, value in {"JOBS_ALERT_TO": "ops1@example.com,ops2@example.com", "JOBS_ALERT_MIN_ATTEMPTS": "4",
                       "JOBS_ALERT_FAILURE_RATE": "0.5", "JOBS_ALERT_WEBHOOK_URL": hook.url + "/alerts"}.items():
        monkeypatch.setenv(key, value)
    reload_settings()
    yield hook
    hook.stop()


def test_a_failure_rate_over_the_threshold_alerts_once_per_incident(alerting, smtp, start_worker):
    ids = [email_queue.enqueue_job("always_fail", {"message": f"boom {i}"}) for i in range(4)]
    ids.append(email_queue.enqueue_job("add", {"a": 1, "b": 2}))
    start_worker("email")
    for job_id in ids:
        finished(job_id)
    wait_until(lambda: len(get_task_history("always_fail")) == 4 and get_task_history("add"), timeout=20,
               message="the worker to flush its metrics")
    check = finished(email_queue.enqueue_job("check_failure_rates", {}))
    assert check.result["firing"] == ["always_fail"], check.error  # add: 1 attempt, under the minimum
    [alert] = check.result["alerts"]
    assert (alert["attempts"], alert["failures"], alert["rate"]) == (4, 4, 1.0)
    for job_id in alert["jobs"]:
        assert finished(job_id).status.value == "completed"
    assert sorted(m["to"][0] for m in smtp.messages) == ["ops1@example.com", "ops2@example.com"]
    assert "always_fail: 100% of attempts failing" in smtp.messages[0]["data"]
    assert "boom" in smtp.messages[0]["data"]
    [hooked] = alerting.requests
    assert hooked["path"] == "/alerts" and hooked["body"]["event"] == "task.failure_rate"
    assert (hooked["body"]["task"], hooked["body"]["attempts"]) == ("always_fail", 4)

    again = finished(email_queue.enqueue_job("check_failure_rates", {}))
    assert again.result["firing"] == ["always_fail"] and again.result["alerts"] == []  # same incident
    ttl = get_redis().ttl(keys.alert("always_fail"))
    settings = get_settings()
    assert 0 < ttl <= settings.alert_cooldown + settings.alert_check_interval
    get_redis().delete(keys.alert("always_fail"))  # what the cooldown's expiry does: the next incident alerts
    third = finished(email_queue.enqueue_job("check_failure_rates", {}))
    assert [a["task"] for a in third.result["alerts"]] == ["always_fail"]


def test_under_the_threshold_or_the_minimum_nothing_is_sent(alerting, smtp, start_worker):
    ids = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(3)]
    ids.append(email_queue.enqueue_job("always_fail", {"message": "once"}))
    start_worker("email")
    for job_id in ids:
        finished(job_id)
    wait_until(lambda: len(get_task_history("add")) == 3 and get_task_history("always_fail"), timeout=20)
    check = finished(email_queue.enqueue_job("check_failure_rates", {}))
    assert check.result == {"checked": 2, "firing": [], "alerts": []}
    assert smtp.messages == [] and alerting.requests == []
