"""AI jobs per thread (summary, sentiment, reply draft, tasks) stored on email_threads rows, with
the local engine and an OpenAI-compatible peer; the bulk run; an existing database without the
new column; on SQLite and PostgreSQL with real worker processes."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from ai_assistant.thread_jobs import process_thread_ai, queue_thread_ai, thread_job_id
from core.api.jobs import get_job, get_user_jobs
from core.api.queues import ai_queue
from core.config import get_settings, reload_settings
from core.errors import PermanentJobError
from core.platform.db import session_scope
from email_automation.models import EmailMessage, EmailThread
from tests.peers import JsonHttpPeer
from tests.servers import wait_until

INVOICE = [("Ada Lovelace <ada@example.com>", "Invoice 42",
            "The invoice is overdue and I am disappointed. Please send a corrected invoice by Friday."),
           ("Ada Lovelace <ada@example.com>", "Re: Invoice 42", "Could you also confirm the refund?")]


def finished(job_id, timeout=30):
    return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=timeout)


def add_messages(user: str, thread: str, messages, start: int = 0) -> None:
    with session_scope() as session:
        session.add_all([EmailMessage(user_id=user, gmail_id=f"{thread}-{start + i}", thread_id=thread, sender=s,
                                      subject=subj, snippet=body, internal_date=1_700_000_000.0 + start + i)
                         for i, (s, subj, body) in enumerate(messages)])


def thread_row(user: str, thread: str) -> EmailThread | None:
    with session_scope() as session:
        return session.scalar(select(EmailThread).where(EmailThread.user_id == user, EmailThread.thread_id == thread))


def test_a_thread_job_stores_each_result_on_the_row(domain_env, start_worker):
    add_messages("u1", "t-inv", INVOICE)
    start_worker("ai")
    job = finished(queue_thread_ai("t-inv"))
    assert job.status.value == "completed", job.error
    assert job.job_id == thread_job_id("u1", "t-inv") and job.result["engine"] == "local"
    row = thread_row("u1", "t-inv")
    assert row.summary.startswith('2 messages from Ada about "Invoice 42"')
    assert row.sentiment == "negative" and row.ai_engine == "local" and row.message_count == 2
    assert row.reply_draft.startswith("Hi Ada,") and "billing" in row.reply_draft
    assert json.loads(row.tasks_json) == ["Please send a corrected invoice by Friday.",
                                          "Could you also confirm the refund?"]
    again = finished(queue_thread_ai("t-inv"))  # nothing new: a no-op
    assert again.result == {"user_id": "u1", "thread_id": "t-inv", "status": "skipped", "reason": "no new messages"}
    add_messages("u1", "t-inv", [("bob@example.com", "Re: Invoice 42", "Thanks, great, sorted now.")], start=5)
    third = finished(queue_thread_ai("t-inv"))
    assert third.result["status"] == "processed" and thread_row("u1", "t-inv").message_count == 3


def test_bulk_run_queues_one_job_per_unprocessed_thread(domain_env, start_worker):
    add_messages("u1", "a", INVOICE[:1])
    add_messages("u1", "b", INVOICE[1:])
    add_messages("u2", "c", [("carol@example.com", "Lunch", "Great to see you. Can you book a table?")])
    start_worker("ai")
    only_u1 = finished(ai_queue.enqueue_job("process_unprocessed_threads", {"user_id": "u1", "limit": 1}))
    assert only_u1.result["queued"] == 1 and only_u1.result["users"] == 1
    assert finished(only_u1.result["job_ids"][0]).status.value == "completed"
    assert thread_row("u1", "a") is not None and thread_row("u1", "b") is None
    everyone = finished(ai_queue.enqueue_job("process_unprocessed_threads", {"limit": 50}))
    assert everyone.result["queued"] == 2 and everyone.result["users"] == 2
    for job_id in everyone.result["job_ids"]:
        assert finished(job_id).status.value == "completed"
    assert thread_row("u2", "c").sentiment == "positive"
    assert everyone.result["job_ids"][-1] in [j.job_id for j in get_user_jobs("u2", 10)]
    assert finished(ai_queue.enqueue_job("process_unprocessed_threads", {})).result["queued"] == 0


def test_an_unknown_thread_fails_at_once_with_the_reason(domain_env, start_worker):
    job_id = ai_queue.enqueue_job("process_thread_ai", {"user_id": "u9", "thread_id": "nope"})
    start_worker("ai")
    job = finished(job_id)
    assert job.status.value == "failed" and job.retry_count == 0
    assert "thread 'nope' of user 'u9' has no stored messages" in job.error
    with pytest.raises(ValueError, match="unknown AI thread task 'classify'"):
        queue_thread_ai("x", "u1", tasks=["classify"])


def _remote_answer(body) -> dict:
    system = body["messages"][0]["content"]
    content = ("The customer wants a corrected invoice." if system.startswith("Summarize")
               else "Negative." if "sentiment" in system
               else "- Send the corrected invoice\n- Confirm the refund" if "action items" in system
               else "Dear Ada, the corrected invoice is on its way.")
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def test_a_thread_job_with_an_openai_compatible_provider(domain_env, start_worker, monkeypatch):
    peer = JsonHttpPeer(_remote_answer)
    monkeypatch.setenv("AI_BASE_URL", peer.url + "/v1")
    monkeypatch.setenv("AI_MODEL", "test-model")
    reload_settings()
    try:
        add_messages("u1", "t-inv", INVOICE)
        start_worker("ai")
        job = finished(queue_thread_ai("t-inv", "u1"))
        assert job.status.value == "completed", job.error
        row = thread_row("u1", "t-inv")
        assert (row.summary, row.sentiment, row.ai_engine) == ("The customer wants a corrected invoice.", "negative",
                                                              "test-model")
        assert json.loads(row.tasks_json) == ["Send the corrected invoice", "Confirm the refund"]
        assert row.reply_draft == "Dear Ada, the corrected invoice is on its way."
        assert len(peer.requests) == 4 and "overdue" in peer.requests[0]["body"]["messages"][1]["content"]
    finally:
        peer.stop()


def test_a_database_made_before_the_ai_columns_is_upgraded(domain_env):
    """email_messages as an older version created it (no ai_processed_at), with a row in it."""
    old = sa.create_engine(get_settings().database_url)
    with old.begin() as connection:
        connection.execute(sa.text(
            "CREATE TABLE email_messages (id INTEGER PRIMARY KEY, user_id VARCHAR(128), gmail_id VARCHAR(128), "
            "thread_id VARCHAR(128), subject TEXT, sender TEXT, snippet TEXT, internal_date FLOAT, "
            "classification VARCHAR(64), classified_by VARCHAR(64))"))
        connection.execute(sa.text("INSERT INTO email_messages VALUES (1, 'u1', 'g1', 't-old', 'Quote', "
                                   "'dan@example.com', 'Could you send pricing?', 1.0, NULL, NULL)"))
    old.dispose()
    result = process_thread_ai("u1", "t-old")
    assert result["status"] == "processed" and thread_row("u1", "t-old").reply_draft.startswith("Hi dan,")
    with session_scope() as session:
        assert session.scalar(select(EmailMessage.ai_processed_at)) == pytest.approx(time.time(), abs=600)
    with pytest.raises(PermanentJobError, match="unknown AI thread task"):
        process_thread_ai("u1", "t-old", tasks=["nope"])

