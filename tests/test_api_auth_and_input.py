"""Every auth case and every kind of bad input answers with the JSON envelope and a clear
message, never a 500 or an HTML page (Flask's test client against a real Redis)."""

from __future__ import annotations

import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from core.api.queues import email_queue
from core.config import reload_settings
from core.platform.auth import issue_user_token
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response, status: int, code: str, fragment: str = "") -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == code
    assert fragment in body["error"]["message"]


@pytest.fixture
def alice_job(client):
    return email_queue.enqueue_job("add", {"a": 1, "b": 2}, user_id="alice")


def test_no_token_is_401(client, alice_job):
    assert_error(client.get(f"/api/jobs/{alice_job}"), 401, "unauthorized", "missing token")


def test_wrong_admin_token_is_401(client, alice_job):
    assert_error(client.get(f"/api/jobs/{alice_job}", headers=bearer("nope")), 401, "unauthorized", "not valid")


def test_malformed_authorization_header_is_401(client, alice_job):
    response = client.get(f"/api/jobs/{alice_job}", headers={"Authorization": "Basic abc"})
    assert_error(response, 401, "unauthorized", "Bearer <token>")


def test_forged_user_token_is_401(client, alice_job):
    forged = URLSafeTimedSerializer("not-our-secret", salt="fikiri-jobs-user-token").dumps({"uid": "alice"})
    assert_error(client.get(f"/api/jobs/{alice_job}", headers=bearer(forged)), 401, "unauthorized", "bad signature")


def test_expired_user_token_is_401(client, alice_job, monkeypatch):
    token = issue_user_token("alice")
    monkeypatch.setenv("JOBS_USER_TOKEN_MAX_AGE", "1")
    reload_settings()
    time.sleep(2.1)
    assert_error(client.get(f"/api/jobs/{alice_job}", headers=bearer(token)), 401, "unauthorized", "expired")


def test_user_sees_own_job_not_others(client, alice_job):
    mine = client.get(f"/api/jobs/{alice_job}", headers=bearer(issue_user_token("alice")))
    assert mine.status_code == 200 and mine.get_json()["data"]["job_id"] == alice_job
    assert_error(client.get(f"/api/jobs/{alice_job}", headers=bearer(issue_user_token("bob"))), 404, "not_found")
    assert_error(client.post(f"/api/jobs/{alice_job}/cancel", headers=bearer(issue_user_token("bob"))),
                 404, "not_found")
    assert_error(client.get("/api/jobs/user/alice/recent", headers=bearer(issue_user_token("bob"))),
                 403, "forbidden", "only its own jobs")


def test_admin_only_endpoints_refuse_user_tokens(client, alice_job):
    alice = bearer(issue_user_token("alice"))
    for path in ("/api/jobs/queue/email/stats", "/api/jobs/queues/stats", "/api/jobs/queue/email/failed"):
        assert_error(client.get(path, headers=alice), 403, "forbidden", "admin token")
    assert_error(client.post(f"/api/jobs/{alice_job}/retry", headers=alice), 403, "forbidden")
    assert client.get("/api/jobs/queues/stats", headers=ADMIN).status_code == 200


def test_locked_without_an_admin_token_unless_insecure_dev(client, alice_job, monkeypatch):
    monkeypatch.delenv("JOBS_ADMIN_TOKEN")
    reload_settings()
    assert_error(client.get(f"/api/jobs/{alice_job}"), 503, "unavailable", "set JOBS_ADMIN_TOKEN")
    monkeypatch.setenv("JOBS_INSECURE_DEV", "1")
    reload_settings()
    assert client.get(f"/api/jobs/{alice_job}").status_code == 200


@pytest.mark.parametrize("query", ["limit=abc", "limit=-1", "limit=0", "limit=1000000000", "limit=1.5", "limit="])
def test_out_of_range_limits_are_400(client, query):
    response = client.get(f"/api/jobs/user/alice/recent?{query}", headers=ADMIN)
    assert_error(response, 400, "invalid_payload", "from 1 to 100")


@pytest.mark.parametrize("bad_id", ["bad%20id!", "order.42", "invoice-7:x", "x" * 129])
def test_malformed_job_id_is_400_naming_the_rule(client, bad_id):
    response = client.get(f"/api/jobs/{bad_id}", headers=ADMIN)
    assert_error(response, 400, "invalid_job_id", "malformed job id")
    assert "letters, digits, '_' or '-'" in response.get_json()["error"]["message"]
    assert_error(client.post(f"/api/jobs/{bad_id}/cancel", headers=ADMIN), 400, "invalid_job_id", "malformed job id")


def test_unknown_job_and_queue_are_404(client):
    assert_error(client.get("/api/jobs/no-such-job", headers=ADMIN), 404, "not_found", "no-such-job")
    assert_error(client.get("/api/jobs/queue/mail/stats", headers=ADMIN), 404, "unknown_queue", "accepted: email")


def test_unknown_route_and_wrong_method_answer_json(client):
    assert_error(client.get("/api/jobs/a/b/c/d", headers=ADMIN), 404, "not_found", "no endpoint")
    assert_error(client.delete("/api/jobs/health", headers=ADMIN), 405, "method_not_allowed", "allowed: GET")
    assert_error(client.get("/api/jobs/ai/trigger", headers=ADMIN), 405, "method_not_allowed", "POST")


def test_trigger_body_errors(client):
    alice = bearer(issue_user_token("alice"))
    assert_error(client.post("/api/jobs/ai/trigger", data="{not json", content_type="application/json",
                             headers=alice), 400, "invalid_payload", "malformed JSON")
    assert_error(client.post("/api/jobs/ai/trigger", data="prompt=hi", content_type="text/plain", headers=alice),
                 415, "unsupported_media_type", "application/json")
    assert_error(client.post("/api/jobs/ai/trigger", json={"prompt": ""}, headers=alice), 400, "invalid_payload",
                 "non-empty string")
    assert_error(client.post("/api/jobs/ai/trigger", json={"prompt": "x" * 9000}, headers=alice), 400,
                 "invalid_payload", "at most 8000")
    assert_error(client.post("/api/jobs/ai/trigger", json={"prompt": "x" * 300_000}, headers=alice), 413,
                 "payload_too_large")
    assert_error(client.post("/api/jobs/sync/trigger", json={"sync_type": "weekly"}, headers=alice), 400,
                 "invalid_payload", "accepted: manual, incremental, full")
    assert_error(client.post("/api/jobs/ai/trigger", json={"prompt": "hi"}, headers=ADMIN), 400,
                 "invalid_payload", "user_id")


def test_cancel_and_retry_in_the_wrong_state_are_409(client, alice_job):
    assert_error(client.post(f"/api/jobs/{alice_job}/retry", headers=ADMIN), 409, "conflict", "only failed")
    assert client.post(f"/api/jobs/{alice_job}/cancel", headers=ADMIN).status_code == 200
    assert_error(client.post(f"/api/jobs/{alice_job}/cancel", headers=ADMIN), 409, "conflict", "canceled")


def test_other_paths_of_the_host_app_keep_html_errors(client):
    response = client.get("/not-ours")
    assert response.status_code == 404 and not response.is_json
