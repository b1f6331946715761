"""Every protected route refuses no token, a forged token and (for user data) another user's
token — the JSON API, the operator endpoints and /metrics alike."""

from __future__ import annotations

import re

from itsdangerous import URLSafeTimedSerializer

from core.api.queues import email_queue
from core.platform.auth import issue_user_token

PUBLIC = {"/api/jobs/health", "/api/jobs/openapi.json", "/dashboard/login"}


def refused_without_identity(path: str, response) -> bool:
    """The API answers 401; dashboard pages send the browser to the login page (JSON 401 for its API)."""
    if path.startswith("/dashboard") and not path.startswith("/dashboard/api/"):
        return response.status_code == 302 and "/dashboard/login" in response.headers["Location"]
    return response.status_code == 401


def routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # stylesheets and scripts, no data
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule.rule


def concrete(rule: str, job_id: str) -> str:
    values = {"job_id": job_id, "queue_name": "email", "user_id": "alice", "periodic_id": "periodic-email-sync",
              "task": "add", "action": "pause", "name": "nightly-report",
              "webhook_id": "0123456789abcdef", "batch_id": "no-such-batch",
              "group": "alice"}
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: values[m.group(1)], rule)


def test_no_token_and_forged_token_are_refused_everywhere(client):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="alice")
    forged = URLSafeTimedSerializer("guess", salt="fikiri-jobs-user-token").dumps({"uid": "alice"})
    checked = 0
    for method, rule in routes(client.application):
        if rule in PUBLIC:
            continue
        path = concrete(rule, job_id)
        for headers in ({}, {"Authorization": f"Bearer {forged}"}, {"Authorization": "Bearer wrong"}):
            response = client.open(path, method=method, headers=headers, json={"prompt": "x"})
            assert refused_without_identity(path, response), (method, path, headers, response.status_code)
            assert "payload" not in response.get_data(as_text=True)
        checked += 1
    assert checked >= 15


def test_another_users_token_sees_nothing_of_alice(client):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="alice")
    bob = {"Authorization": f"Bearer {issue_user_token('bob')}"}
    for method, rule in routes(client.application):
        if rule in PUBLIC or "trigger" in rule or rule in ("/dashboard/", "/dashboard/api/overview",
                                                           "/dashboard/logout", "/dashboard/search",
                                                           "/dashboard/api/events"):
            continue  # these act for, or show, the caller (bob) only (alice's job's stream: below)
        path = concrete(rule, job_id)
        response = client.open(path, method=method, headers=bob)
        if path.startswith("/dashboard"):
            # Pages: 403/404; actions are refused even earlier without the session's CSRF token.
            assert response.status_code in ((400, 403, 404) if method == "POST" else (403, 404)), (method, path)
            assert "alice" not in response.get_data(as_text=True)
            continue
        assert response.status_code in (403, 404), (method, path, response.status_code)
        body = response.get_json()
        assert body["success"] is False and "data" not in body  # nothing of alice's job comes back
    assert client.get(f"/dashboard/api/events?job={job_id}", headers=bob).status_code == 404
