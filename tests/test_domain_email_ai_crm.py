"""Email sending (SMTP peer on loopback, outbox), AI requests (chat-completions peer, local
engine), classification and CRM upserts with a webhook peer, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.api.queues import ai_queue, crm_queue, email_queue, process_ai_request_async
from core.config import reload_settings
from core.execution import progress
from core.platform.db import session_scope
from core.platform.http import UpstreamError
from email_automation.email_sender import send_email
from email_automation.models import EmailMessage, SentEmail
from tests.conftest import finished
from tests.peers import JsonHttpPeer, chat_completions_peer


def test_send_email_over_smtp_through_a_worker(domain_env, smtp, start_worker):
    job_id = email_queue.enqueue_job("send_email", {"to": "ada@example.com", "subject": "Hi", "body": "Hello Ada"})
    start_worker("email")
    job = finished(job_id)
    assert job.status.value == "completed" and job.result["transport"] == "smtp"
    assert len(smtp.messages) == 1 and smtp.messages[0]["to"] == ["ada@example.com"]
    assert "Subject: Hi" in smtp.messages[0]["data"] and "Hello Ada" in smtp.messages[0]["data"]


def test_a_retried_send_job_does_not_send_twice(domain_env, smtp):
    """Run the task twice as the same job (what a retry after a later failure looks like)."""
    token = progress.bind("mail-job-1", lambda value: None)
    try:
        first = send_email("bob@example.com", "Invoice", "Attached")
        second = send_email("bob@example.com", "Invoice", "Attached")
    finally:
        progress.unbind(token)
    assert first["status"] == "sent" and second["status"] == "already_sent"
    assert len(smtp.messages) == 1


def test_without_smtp_mail_goes_to_the_outbox(domain_env, start_worker):
    job_id = email_queue.enqueue_job("send_email", {"to": "eve@example.com", "subject": "S", "body": "B"})
    start_worker("email")
    job = finished(job_id)
    assert job.result["status"] == "outbox" and "outbox" in job.result["note"]
    with session_scope() as session:
        row = session.scalar(select(SentEmail))
        assert (row.to, row.transport, row.job_key) == ("eve@example.com", "outbox", f"job:{job_id}")


def test_bad_recipient_fails_with_a_clear_error(domain_env, start_worker):
    job_id = email_queue.enqueue_job("send_email", {"to": "nobody", "subject": "S", "body": "B"}, max_retries=0)
    start_worker("email")
    job = finished(job_id)
    assert job.status.value == "failed" and "'to' must be an email address" in job.error


def test_ai_request_with_the_local_engine(domain_env, start_worker):
    job_id = process_ai_request_async("Can I get pricing for 10 seats?", user_id="u5")
    start_worker("ai")
    job = finished(job_id)
    assert job.result["engine"] == "local" and "lead" in job.result["answer"] and job.result["user_id"] == "u5"


def test_ai_request_with_a_remote_provider_backs_off_on_429(domain_env, start_worker, monkeypatch):
    peer = chat_completions_peer()
    peer.script.append((429, {"Retry-After": "1"}, {"error": "rate limited"}))
    monkeypatch.setenv("AI_BASE_URL", peer.url + "/v1")
    monkeypatch.setenv("AI_API_KEY", "sk-test")
    reload_settings()
    try:
        job_id = process_ai_request_async("Summarise my inbox", user_id="u5")
        start_worker("ai")
        job = finished(job_id)
        assert job.status.value == "completed", job.error
        assert job.result["answer"] == "remote answer to: Summarise my inbox" and job.result["engine"] == "gpt-4o-mini"
        assert [r["path"] for r in peer.requests] == ["/v1/chat/completions"] * 2
        assert peer.requests[0]["auth"] == "Bearer sk-test"
    finally:
        peer.stop()


def test_ai_provider_errors_fail_the_job_with_the_reason(domain_env, start_worker, monkeypatch):
    peer = chat_completions_peer()
    peer.script.append((400, {}, {"error": "bad model"}))
    monkeypatch.setenv("AI_BASE_URL", peer.url)
    reload_settings()
    try:
        job_id = ai_queue.enqueue_job("process_ai_request", {"prompt": "hi"}, max_retries=0)
        start_worker("ai")
        job = finished(job_id)
        assert job.status.value == "failed" and "AI provider answered 400" in job.error
    finally:
        peer.stop()


def test_classification_is_stored_and_unclassified_mail_is_processed(domain_env, start_worker):
    with session_scope() as session:
        session.add_all([EmailMessage(user_id="u1", gmail_id=f"g{i}", subject=subject, snippet="")
                         for i, subject in enumerate(["Invoice overdue", "Quote please", "Lunch?"])])
    start_worker("ai")
    queued = finished(ai_queue.enqueue_job("process_unclassified", {"limit": 2}))
    assert queued.result == {"queued": 2, "limit": 2}
    for message_id in (1, 2):
        assert finished(f"classify-{message_id}").status.value == "completed"
    with session_scope() as session:
        rows = session.scalars(select(EmailMessage).order_by(EmailMessage.id)).all()
        assert [(r.classification, r.classified_by) for r in rows] == [("billing", "local"), ("lead", "local"),
                                                                       (None, None)]


def test_crm_upserts_are_idempotent_and_notify_a_webhook(domain_env, start_worker, monkeypatch):
    from crm.models import Contact

    hook = JsonHttpPeer(lambda body: {"ok": True})
    monkeypatch.setenv("CRM_WEBHOOK_URL", hook.url + "/hooks/crm")
    reload_settings()
    try:
        start_worker("crm")
        payload = {"external_id": "hub-7", "email": "lead@example.com", "name": "Lea"}
        first = finished(crm_queue.enqueue_job("upsert_contact", payload))
        same = finished(crm_queue.enqueue_job("upsert_contact", payload))
        changed = finished(crm_queue.enqueue_job("upsert_contact", {**payload, "name": "Lea Smith"}))
        lead = finished(crm_queue.enqueue_job("upsert_lead", {"external_id": "L1", "email": "x@y.z", "score": 40}))
        assert first.result["changed"] and not same.result["changed"] and changed.result["changed"]
        assert lead.result["webhook"] is True
        assert [r["body"]["event"] for r in hook.requests] == ["contact.upserted", "contact.upserted",
                                                               "lead.upserted"]
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(Contact)) == 1
            assert session.scalar(select(Contact.name)) == "Lea Smith"
    finally:
        hook.stop()


def test_webhook_errors_surface(domain_env, monkeypatch):
    from crm.tasks import upsert_contact

    hook = JsonHttpPeer(lambda body: {"ok": True})
    hook.script.append((410, {}, {"error": "gone"}))
    monkeypatch.setenv("CRM_WEBHOOK_URL", hook.url)
    reload_settings()
    try:
        with pytest.raises(UpstreamError, match="CRM webhook answered 410"):
            upsert_contact("hub-9", "a@b.c")
    finally:
        hook.stop()
