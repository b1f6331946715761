"""Operators see job groups: GET /api/jobs/queue/<q>/groups (admin, paged) through gunicorn,
`fikiri-jobs groups <queue>`, get_stats()' top groups, /metrics and the dashboard's queue page."""

from __future__ import annotations

import json

import requests

from core.api.queues import email_queue
from core.ops import audit
from core.platform.auth import issue_user_token
from tests.conftest import ADMIN_TOKEN
from tests.test_dashboard_pages import csrf, login
from tests.test_ops_cli import cli

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def backlog() -> None:
    """Three tenants with 5, 3 and 1 jobs waiting."""
    for tenant, n in (("big", 5), ("mid", 3), ("one", 1)):
        email_queue.enqueue_many("group_mark", [{"key": "test:ops", "item": f"{tenant}{i}", "tenant": tenant}
                                                for i in range(n)])


def test_http_lists_groups_largest_backlog_first_paged_admin_only(api_server):
    backlog()
    url = api_server.url("/api/jobs/queue/email/groups")
    body = requests.get(url, headers=ADMIN, timeout=5).json()["data"]
    assert [(g["group"], g["waiting"], g["running"]) for g in body["groups"]] == [("big", 5, 0), ("mid", 3, 0),
                                                                                 ("one", 1, 0)]
    assert body["total"] == 3 and all(g["oldest_age"] >= 0 for g in body["groups"])
    second = requests.get(url, params={"limit": 1, "page": 2}, headers=ADMIN, timeout=5).json()["data"]
    assert [g["group"] for g in second["groups"]] == ["mid"] and second["page"] == 2
    user = {"Authorization": f"Bearer {issue_user_token('alice')}"}
    assert requests.get(url, headers=user, timeout=5).status_code == 403
    bad = requests.get(url, params={"limit": 0}, headers=ADMIN, timeout=5)
    assert bad.status_code == 400 and "limit" in bad.json()["error"]["message"]
    unknown = requests.get(api_server.url("/api/jobs/queue/nope/groups"), headers=ADMIN, timeout=5)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_queue"


def test_cli_groups_table_json_and_bad_input(jobs_env):
    backlog()
    email_queue.pause_group("mid")
    table = cli(jobs_env.url, "groups", "email")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["GROUP", "WAITING", "RUNNING", "OLDEST_AGE", "WEIGHT", "PAUSED"]
    assert [line.split()[0] for line in lines[1:4]] == ["big", "mid", "one"] and lines[-1] == "3 group(s)"
    assert lines[2].split()[-1] == "yes"
    data = json.loads(cli(jobs_env.url, "--json", "groups", "email", "--limit", "2", "--page", "2").stdout)
    assert [g["group"] for g in data["groups"]] == ["one"] and data["total"] == 3
    bad = cli(jobs_env.url, "groups", "email", "--limit", "0")
    assert bad.returncode == 2 and "limit must be a whole number from 1 to 1000, got 0" in bad.stderr


def test_stats_metrics_and_dashboard_show_the_top_groups(client):
    backlog()
    stats = email_queue.get_stats()
    assert stats["pending_jobs"] == 9 and stats["groups"] == 3
    assert [(g["group"], g["waiting"]) for g in stats["top_groups"]] == [("big", 5), ("mid", 3), ("one", 1)]
    text = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
    assert 'fikiri_group_waiting_jobs{group="big",queue="email"} 5.0' in text
    assert 'fikiri_group_running_jobs{group="one",queue="email"} 0.0' in text
    login(client)
    page = client.get("/dashboard/queue/email").get_data(as_text=True)
    assert 'id="queue-groups"' in page and "<td>big</td><td>5</td><td>0</td>" in page


def test_dashboard_lists_grouped_pending_jobs_after_the_queue_s_own(client):
    from core.api.jobs import page_ids

    plain = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    backlog()
    ids, total = page_ids("email", "pending", 0, 20)
    assert total == 10 and ids[0] == plain and len(ids) == 10
    second, _ = page_ids("email", "pending", 8, 20)
    assert len(second) == 2
    login(client)
    page = client.get("/dashboard/queue/email?state=pending").get_data(as_text=True)
    assert "pending (10)" in page and "group_mark" in page


def test_http_pauses_resumes_and_weighs_one_group_admin_only(api_server):
    backlog()
    base = api_server.url("/api/jobs/queue/email/groups/mid")
    paused = requests.post(f"{base}/pause", headers=ADMIN, timeout=5).json()["data"]
    assert paused == {"queue": "email", "group": "mid", "paused": True, "changed": True}
    assert [g["paused"] for g in email_queue.groups() if g["group"] == "mid"] == [True]
    assert requests.post(f"{base}/resume", headers=ADMIN, timeout=5).json()["data"]["changed"] is True
    weighed = requests.post(f"{base}/weight", json={"weight": 3}, headers=ADMIN, timeout=5)
    assert weighed.status_code == 200 and weighed.json()["data"]["weight"] == 3.0
    assert [g["weight"] for g in email_queue.groups() if g["group"] == "mid"] == [3.0]
    bad = requests.post(f"{base}/weight", json={"weight": -1}, headers=ADMIN, timeout=5)
    assert bad.status_code == 400 and "weight must be a number above 0" in bad.json()["error"]["message"]
    user = {"Authorization": f"Bearer {issue_user_token('alice')}"}
    assert requests.post(f"{base}/pause", headers=user, timeout=5).status_code == 403
    assert {"pause_group", "resume_group", "group_weight"} <= {e["action"] for e in audit.recent(10)}


def test_cli_pauses_resumes_and_weighs_one_group(jobs_env):
    backlog()
    done = cli(jobs_env.url, "group", "pause", "email", "big")
    assert done.returncode == 0 and done.stdout.strip() == "group big of email paused", done.stderr
    assert [g["paused"] for g in email_queue.groups() if g["group"] == "big"] == [True]
    assert cli(jobs_env.url, "group", "resume", "email", "big").stdout.strip() == "group big of email resumed"
    assert cli(jobs_env.url, "group", "weight", "email", "big", "2.5").stdout.strip() == "group big of email: weight 2.5"
    assert [g["weight"] for g in email_queue.groups() if g["group"] == "big"] == [2.5]
    bad = cli(jobs_env.url, "group", "weight", "email", "big", "0")
    assert bad.returncode == 2 and "weight must be a number above 0" in bad.stderr


def test_dashboard_pause_button_holds_one_group(client):
    backlog()
    login(client)
    token = csrf(client, "/dashboard/queue/email")
    response = client.post("/dashboard/queue/email/group/big/pause", data={"csrf_token": token})
    assert response.status_code == 302
    assert [g["paused"] for g in email_queue.groups() if g["group"] == "big"] == [True]
    page = client.get("/dashboard/queue/email").get_data(as_text=True)
    assert "/dashboard/queue/email/group/big/resume" in page


def test_http_job_status_shows_the_jobs_group(api_server):
    grouped = email_queue.enqueue_job("group_mark", {"key": "test:ops", "item": "x", "tenant": "acct-9"})
    called = email_queue.enqueue_job("add", {"a": 1, "b": 2}, user_id="alice", group="acct-42")
    plain = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    def read(job_id: str, headers: dict) -> dict:
        answer = requests.get(api_server.url(f"/api/jobs/{job_id}"), headers=headers, timeout=5)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]
    first = read(grouped, ADMIN)
    assert first["group"] == "acct-9" and first["mode"] == "redis"  # from the task's group="{tenant}"
    user = {"Authorization": f"Bearer {issue_user_token('alice')}"}
    assert read(called, user)["group"] == "acct-42"  # the owner sees it too: a call's own group=
    assert read(plain, ADMIN)["group"] is None
