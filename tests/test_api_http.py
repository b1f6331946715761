"""The /api/jobs endpoints through gunicorn on loopback, with real jobs run by a real worker."""

from __future__ import annotations

import pytest
import requests

from core.api.queues import email_queue
from core.platform.auth import issue_user_token
from tests.conftest import ADMIN_TOKEN
from tests.servers import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def user(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_user_token(user_id)}"}


def poll_final(api_server, job_id, headers, timeout=30):
    def done():
        body = requests.get(api_server.url(f"/api/jobs/{job_id}"), headers=headers, timeout=5).json()
        return body["data"]["status"] in ("completed", "failed", "canceled") and body["data"]
    return wait_until(done, timeout=timeout, interval=0.2)


def test_job_status_over_http_with_a_real_worker(api_server, start_worker):
    job_id = email_queue.enqueue_job("add", {"a": 40, "b": 2}, user_id="alice")
    start_worker("email")
    data = poll_final(api_server, job_id, user("alice"))
    assert data["status"] == "completed" and data["result"] == 42 and data["mode"] == "redis"
    for field in ("job_id", "queue", "task_name", "created_at", "started_at", "completed_at", "error",
                  "retry_count", "max_retries", "progress"):
        assert field in data
    other = requests.get(api_server.url(f"/api/jobs/{job_id}"), headers=user("bob"), timeout=5)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_triggers_queue_work_for_the_caller(api_server, start_worker):
    start_worker()
    sync = requests.post(api_server.url("/api/jobs/sync/trigger"), json={"sync_type": "full"},
                         headers=user("carol"), timeout=5)
    assert sync.status_code == 202
    ai = requests.post(api_server.url("/api/jobs/ai/trigger"), json={"prompt": "Summarise"},
                       headers=user("carol"), timeout=5)
    assert ai.status_code == 202
    data = poll_final(api_server, ai.json()["data"]["job_id"], user("carol"))
    assert data["status"] == "completed" and data["user_id"] == "carol"
    # carol has no connected Gmail account: her sync fails, saying so (after its retries), and she
    # sees the exception's type and message only
    data = poll_final(api_server, sync.json()["data"]["job_id"], user("carol"), timeout=60)
    assert data["status"] == "failed" and data["user_id"] == "carol"
    assert data["error"] == "SyncError: user carol has no connected Gmail account"
    recent = requests.get(api_server.url("/api/jobs/user/carol/recent?limit=5"), headers=user("carol"), timeout=5)
    assert [j["task_name"] for j in recent.json()["data"]["jobs"]] == ["process_ai_request", "process_gmail_sync"]


def test_queue_stats_failed_list_and_retry_for_the_admin(api_server, start_worker):
    job_id = email_queue.enqueue_job("fail_times", {"key": "test:http", "times": 1}, max_retries=0)
    start_worker("email")
    assert poll_final(api_server, job_id, ADMIN)["status"] == "failed"
    stats = requests.get(api_server.url("/api/jobs/queue/email/stats"), headers=ADMIN, timeout=5).json()["data"]
    assert stats["queue"] == "email" and stats["stats"]["failed_jobs"] == 1 and stats["stats"]["workers"] == 1
    every = requests.get(api_server.url("/api/jobs/queues/stats"), headers=ADMIN, timeout=5).json()["data"]
    assert [q["queue"] for q in every] == ["email", "ai", "crm"]
    failed = requests.get(api_server.url("/api/jobs/queue/fikiri:email/failed?limit=10"), headers=ADMIN,
                          timeout=5).json()["data"]["jobs"]
    assert [j["job_id"] for j in failed] == [job_id] and "planned failure" in failed[0]["error"]
    retried = requests.post(api_server.url(f"/api/jobs/{job_id}/retry"), headers=ADMIN, timeout=5)
    assert retried.status_code == 200
    assert poll_final(api_server, job_id, ADMIN)["status"] == "completed"


def test_cancel_over_http(api_server):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=300, user_id="dave")
    response = requests.post(api_server.url(f"/api/jobs/{job_id}/cancel"), headers=user("dave"), timeout=5)
    assert response.status_code == 200 and response.json()["data"]["status"] == "canceled"
    again = requests.post(api_server.url(f"/api/jobs/{job_id}/cancel"), headers=user("dave"), timeout=5)
    assert again.status_code == 409 and "only pending" in again.json()["error"]["message"]


@pytest.mark.fallback
def test_health_reports_degraded_while_redis_is_down_and_fallback_jobs_stay_readable(api_server, jobs_env):
    assert requests.get(api_server.url("/api/jobs/health"), timeout=5).json()["data"]["status"] == "ok"
    jobs_env.stop()
    health = wait_until(lambda: (h := requests.get(api_server.url("/api/jobs/health"), timeout=5).json()["data"])
                        ["status"] == "degraded" and h, timeout=15)
    assert health["redis"] is False and health["mode"] == "fallback"
    # A trigger still answers at once; the job runs in the API process's fallback pool. gunicorn
    # has two processes, so poll until the one that owns the job answers.
    created = requests.post(api_server.url("/api/jobs/ai/trigger"), json={"prompt": "hi", "user_id": "erin"},
                            headers=ADMIN, timeout=5)
    assert created.status_code == 202
    job_id = created.json()["data"]["job_id"]

    def fallback_done():
        response = requests.get(api_server.url(f"/api/jobs/{job_id}"), headers=ADMIN, timeout=5)
        return response.status_code == 200 and response.json()["data"]["status"] == "completed" and response.json()
    body = wait_until(fallback_done, timeout=20, interval=0.1)
    assert body["data"]["mode"] == "fallback"
    unknown = requests.get(api_server.url("/api/jobs/some-redis-job"), headers=ADMIN, timeout=5)
    assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "unavailable"
    jobs_env.start()
    wait_until(lambda: requests.get(api_server.url("/api/jobs/health"), timeout=5).json()["data"]["status"] == "ok",
               timeout=15)
