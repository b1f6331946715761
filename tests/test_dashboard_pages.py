"""Dashboard pages and actions through Flask's test client against a real Redis: login, pages,
CSRF protection, user tokens limited to their own jobs, paging over 10,000+ jobs."""

from __future__ import annotations

import re

from core.auth import issue_user_token
from core.periodic import register_periodic_jobs
from core.redis_queues import email_queue, get_job
from tests.conftest import ADMIN_TOKEN


def login_csrf(client) -> str:
    page = client.get("/dashboard/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, token: str = ADMIN_TOKEN):
    response = client.post("/dashboard/login", data={"token": token, "csrf_token": login_csrf(client)})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client


def csrf(client, path: str = "/dashboard/") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def test_no_token_no_page(client):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    response = client.get(f"/dashboard/job/{job_id}")
    assert response.status_code == 302 and "/dashboard/login" in response.headers["Location"]
    assert client.get("/dashboard/api/overview").status_code == 401
    bad = client.post("/dashboard/login", data={"token": "wrong", "csrf_token": login_csrf(client)})
    assert bad.status_code == 401 and "not valid" in bad.get_data(as_text=True)


def test_admin_pages_render(client):
    register_periodic_jobs()
    failed = email_queue.enqueue_job("always_fail", {"message": "x"})
    login(client)
    for path in ("/dashboard/", "/dashboard/queue/email?state=pending", "/dashboard/failures",
                 "/dashboard/scheduler", "/dashboard/metrics", f"/dashboard/job/{failed}"):
        response = client.get(path)
        assert response.status_code == 200, path
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert 'data-queue="email"' in overview and "Redis reachable" in overview
    assert "periodic-email-sync" in client.get("/dashboard/scheduler").get_data(as_text=True)
    data = client.get("/dashboard/api/overview").get_json()["data"]
    assert data["queues"][0]["pending_jobs"] == 1 and len(data["rate"]) == 15
    assert client.get("/dashboard/queue/email?state=bogus").status_code == 400
    assert client.get("/dashboard/queue/email?page=x").status_code == 400


def test_actions_need_the_csrf_token(client):
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=600)
    login(client)
    refused = client.post(f"/dashboard/job/{job_id}/cancel")
    assert refused.status_code == 400 and get_job(job_id).status.value == "delayed"
    wrong = client.post(f"/dashboard/job/{job_id}/cancel", data={"csrf_token": "nope"})
    assert wrong.status_code == 400
    done = client.post(f"/dashboard/job/{job_id}/cancel", data={"csrf_token": csrf(client)})
    assert done.status_code == 302 and get_job(job_id).status.value == "canceled"


def test_user_token_sees_only_its_own_jobs(client):
    mine = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="alice")
    theirs = email_queue.enqueue_job("add", {"a": 2, "b": 2}, user_id="bob")
    login(client, issue_user_token("alice"))
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert mine[:18] in overview and theirs[:18] not in overview and "queue-stats" not in overview
    assert client.get(f"/dashboard/job/{mine}").status_code == 200
    assert client.get(f"/dashboard/job/{theirs}").status_code == 404
    for path in ("/dashboard/queue/email", "/dashboard/failures", "/dashboard/scheduler", "/dashboard/metrics"):
        assert client.get(path).status_code == 403, path


def test_paging_over_10000_pending_jobs(client):
    for _ in range(11):
        email_queue.enqueue_many("add", [{"a": 1, "b": 1}] * 1000)
    login(client)
    page = client.get("/dashboard/queue/email?state=pending&page=100").get_data(as_text=True)
    assert page.count('href="/dashboard/job/') == 50
    assert "page 101 of 220" in page and "11000 job(s)" in page
    last = client.get("/dashboard/queue/email?state=pending&page=219").get_data(as_text=True)
    assert last.count('href="/dashboard/job/') == 50 and "older" not in last
