"""The domain's async tasks (issue 22 item 7): process_ai_request_aio against an
OpenAI-compatible peer and upsert_contact_aio / upsert_lead_aio with their CRM webhook, on the
async worker and on the default one, with core/platform/aio_http.py's back-off and Retry-After.
Real workers, real loopback HTTP peers, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.api.queues import ai_queue, crm_queue
from core.config import reload_settings
from core.platform.db import session_scope
from tests.conftest import finished
from tests.peers import JsonHttpPeer, chat_completions_peer


@pytest.mark.parametrize("worker_class", ["async", "prefork"])
def test_async_ai_request_against_a_provider_that_asks_to_wait(domain_env, start_worker, monkeypatch, worker_class):
    """A 429 with Retry-After defers the job (no failure, no held slot); then it answers."""
    peer = chat_completions_peer()
    peer.script.append((429, {"Retry-After": "1"}, {"error": "rate limited"}))
    monkeypatch.setenv("AI_BASE_URL", peer.url + "/v1")
    monkeypatch.setenv("AI_API_KEY", "sk-test")
    reload_settings()
    try:
        job_id = ai_queue.enqueue_job("process_ai_request_aio", {"prompt": "Summarise my inbox", "user_id": "u5"})
        start_worker("ai", "--worker-class", worker_class)
        job = finished(job_id, timeout=60)
        assert job.status.value == "completed", job.error
        assert job.result == {"user_id": "u5", "engine": "gpt-4o-mini",
                              "answer": "remote answer to: Summarise my inbox"}
        assert job.deferrals == 1 and job.retry_count == 0
        assert [r["path"] for r in peer.requests] == ["/v1/chat/completions"] * 2
        assert peer.requests[0]["auth"] == "Bearer sk-test"
    finally:
        peer.stop()


def test_async_ai_request_errors_and_the_local_engine(domain_env, start_worker, monkeypatch):
    local = ai_queue.enqueue_job("process_ai_request_aio", {"prompt": "Can I get pricing for 10 seats?"})
    without_provider = start_worker("ai", "--worker-class", "async")
    job = finished(local)
    assert job.result["engine"] == "local" and "lead" in job.result["answer"]
    without_provider.stop()
    peer = chat_completions_peer()
    peer.script.append((400, {}, {"error": "bad model"}))
    monkeypatch.setenv("AI_BASE_URL", peer.url)
    reload_settings()
    try:
        failed = ai_queue.enqueue_job("process_ai_request_aio", {"prompt": "hi"}, max_retries=0)
        start_worker("ai", "--worker-class", "async")  # a worker that reads the provider's URL
        job = finished(failed, timeout=60)
        assert job.status.value == "failed" and "AI provider answered 400" in job.error
    finally:
        peer.stop()


def test_async_crm_upserts_are_idempotent_and_notify_a_webhook(domain_env, start_worker, monkeypatch):
    from crm.models import Contact, Lead

    hook = JsonHttpPeer(lambda body: {"ok": True})
    hook.script.append((503, {}, {"error": "busy"}))  # retried inside the call with back-off
    monkeypatch.setenv("CRM_WEBHOOK_URL", hook.url + "/hooks/crm")
    reload_settings()
    try:
        start_worker("crm", "--worker-class", "async")
        payload = {"external_id": "hub-8", "email": "lead@example.com", "name": "Lea"}
        first = finished(crm_queue.enqueue_job("upsert_contact_aio", payload), timeout=60)
        same = finished(crm_queue.enqueue_job("upsert_contact_aio", payload))
        lead = finished(crm_queue.enqueue_job("upsert_lead_aio", {"external_id": "L2", "email": "x@y.z", "score": 7}))
        assert first.status.value == "completed", first.error
        assert (first.result["changed"], first.result["webhook"]) == (True, True)
        assert (same.result["changed"], same.result["webhook"]) == (False, False)
        assert lead.result["webhook"] is True and lead.result["score"] == 7
        assert [r["body"]["event"] for r in hook.requests] == ["contact.upserted", "contact.upserted", "lead.upserted"]
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(Contact)) == 1
            assert session.scalar(select(Lead.score)) == 7
    finally:
        hook.stop()
