"""Dashboard pages and actions through Flask's test client against a real Redis: login, pages,
CSRF protection, user tokens limited to their own jobs, paging over 10,000+ jobs, search by job
id / user / task, the workers page with a real worker process, the throughput chart's data."""

from __future__ import annotations

import html
import re
import time
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.api.jobs import get_job
from core.api.queues import crm_queue, email_queue
from core.ops import dashboard_queries
from core.platform.auth import issue_user_token
from core.schedule.periodic import register_periodic_jobs
from tests.conftest import ADMIN_TOKEN, finished
from tests.servers import wait_until


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
                 "/dashboard/scheduler", "/dashboard/metrics", f"/dashboard/job/{failed}", "/dashboard/workers",
                 "/dashboard/search", "/dashboard/?range=24h"):
        response = client.get(path)
        assert response.status_code == 200, path
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert 'data-queue="email"' in overview and "Redis reachable" in overview
    assert "periodic-email-sync" in client.get("/dashboard/scheduler").get_data(as_text=True)
    data = client.get("/dashboard/api/overview").get_json()["data"]
    assert data["queues"][0]["pending_jobs"] == 1
    assert data["throughput"]["range"] == "1h" and len(data["throughput"]["points"]) == 60
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
    for path in ("/dashboard/queue/email", "/dashboard/failures", "/dashboard/scheduler", "/dashboard/metrics",
                 "/dashboard/workers", "/dashboard/api/workers"):
        assert client.get(path).status_code == 403, path


def test_paging_over_10000_pending_jobs(client):
    for _ in range(11):
        email_queue.enqueue_many("add", [{"a": 1, "b": 1}] * 1000)
    login(client)
    page = client.get("/dashboard/queue/email?state=pending&page=100").get_data(as_text=True)
    assert page.count('href="/dashboard/job/') == 50
    assert "page 101 of 220" in page and "11000 job(s)" in page
    last = client.get("/dashboard/queue/email?state=pending&page=219").get_data(as_text=True)
    assert last.count('href="/dashboard/job/') == 50 and "older &rarr;" not in last


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def test_search_by_job_id_user_and_task(client):
    mine = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="alice")
    later = email_queue.enqueue_job("record_run", {"key": "k"}, user_id="alice", delay=600)
    theirs = email_queue.enqueue_job("add", {"a": 2, "b": 2}, user_id="bob")
    crm = crm_queue.enqueue_job("crm_echo", {"text": "hi"})
    login(client)

    found = client.get(f"/dashboard/search?by=id&q={mine}")
    assert found.status_code == 302 and found.headers["Location"].endswith(f"/dashboard/job/{mine}")

    by_user = page_text(client.get("/dashboard/search?by=user&q=alice"))
    assert mine[:18] in by_user and later[:18] in by_user and theirs[:18] not in by_user
    assert "2 job(s) of user alice" in by_user

    by_task = page_text(client.get("/dashboard/search?by=task&q=add"))
    assert mine[:18] in by_task and theirs[:18] in by_task  # the admin sees every user's
    assert later[:18] not in by_task and crm[:18] not in by_task and "2 job(s) of task add among all jobs" in by_task
    delayed = page_text(client.get("/dashboard/search?by=task&q=record_run"))
    assert later[:18] in delayed and "1 job(s)" in delayed
    urgent = email_queue.enqueue_job("with_progress", {"steps": 1}, priority="high")
    slow = email_queue.enqueue_job("with_progress", {"steps": 2}, priority="low")
    by_priority = page_text(client.get("/dashboard/search?by=task&q=with_progress"))
    assert urgent[:18] in by_priority and slow[:18] in by_priority  # every pending priority list


def test_task_search_is_bounded_and_says_so(client):
    email_queue.enqueue_many("add", [{"a": 1, "b": 1}] * 30)
    found = dashboard_queries.find_jobs_by_task("add", limit=100, per_state=10)
    assert len(found.jobs) == 10 and found.scanned == 10 and not found.complete
    login(client)
    page = page_text(client.get("/dashboard/search?by=task&q=add"))
    assert "30 job(s) of task add among all jobs" in page


def test_bad_search_input_gets_a_clear_message(client):
    other = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="bob")
    login(client)
    cases = [
        ("by=id&q=" + "x" * 129, 400, "at most 128 are accepted"),
        ("by=id&q=%3Cscript%3Ealert(1)%3C/script%3E", 400, "malformed job id"),
        ("by=user&q=al%20ice", 400, "malformed user"),
        ("by=task&q=..%2F..%2Fetc", 400, "malformed task"),
        ("by=nope&q=x", 400, "unknown search kind 'nope'; accepted: id, user, task"),
        ("by=id&q=no-such-job", 404, "no job with id 'no-such-job'"),
        ("by=task&q=proces_gmail_sync", 200, "no task 'proces_gmail_sync' is registered (registered: "),
    ]
    for query, status, message in cases:
        response = client.get(f"/dashboard/search?{query}")
        assert response.status_code == status, (query, response.status_code)
        assert message in page_text(response), query
        assert "<script>alert" not in response.get_data(as_text=True)
    assert client.get("/dashboard/?range=7d").status_code == 400

    login(client, issue_user_token("alice"))
    refused = client.get("/dashboard/search?by=user&q=bob")
    assert refused.status_code == 403 and "only its own jobs" in page_text(refused)
    assert client.get(f"/dashboard/search?by=id&q={other}").status_code == 404  # another user's job: not found
    mine = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="alice")
    own = page_text(client.get("/dashboard/search?by=task&q=add"))
    assert mine[:18] in own and other[:18] not in own and "1 of your job(s)" in own


ODD = st.one_of(st.sampled_from(["", " ", "²", "%00", "\u202e", "a/b", "../x", "x" * 129, "x" * 5000, "id", "user",
                                  "task", "add", "alice", "7"]), st.text(max_size=40))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(by=ODD, q=ODD, chart_range=ODD, admin=st.booleans())
def test_fuzzed_search_workers_and_chart_input_finds_no_server_error(client, by, q, chart_range, admin):
    token = ADMIN_TOKEN if admin else issue_user_token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    for path in (f"/dashboard/search?by={quote(by, safe='')}&q={quote(q, safe='')}",
                 f"/dashboard/?range={quote(chart_range, safe='')}", f"/dashboard/api/overview?range={quote(chart_range)}",
                 "/dashboard/workers", "/dashboard/api/workers"):
        response = client.get(path, headers=headers)
        assert response.status_code < 500, (path, response.status_code, response.get_data(as_text=True)[:300])
        assert "Traceback" not in response.get_data(as_text=True)


def test_workers_page_lists_a_live_worker_and_the_chart_counts_its_jobs(client, start_worker):
    worker = start_worker("email", "ai")
    running = email_queue.enqueue_job("sleep_then_count", {"seconds": 6, "key": "test:workers"})
    done = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(2)]
    login(client)

    def busy_row():
        page = page_text(client.get("/dashboard/workers"))
        match = re.search(rf'<tr data-worker="[^"]+" data-pid="{worker.pid}">(.*?)</tr>', page, re.S)
        return match and running[:18] in match.group(1) and match.group(1)

    row = wait_until(busy_row, timeout=20, message="the worker's heartbeat to name its current job")
    assert f'href="/dashboard/job/{running}"' in row and ">busy<" in row
    assert re.search(r'data-key="heartbeat_age">\s*\d+ s ago', row) and re.search(r"\d+\.\d MB", row)
    assert "email</a>, <a" in row and ">ai</a>" in row
    workers = client.get("/dashboard/api/workers").get_json()["data"]
    assert [w["pid"] for w in workers] == [worker.pid] and workers[0]["hostname"]

    for job_id in done + [running]:
        assert finished(job_id).status.value == "completed"
    wait_until(lambda: sum(p["completed"] for p in dashboard_queries.throughput("1h")["points"]) == 3,
               timeout=10, message="the worker's metrics flush")
    for chart_range, buckets in (("1h", 60), ("24h", 24)):
        series = client.get(f"/dashboard/api/overview?range={chart_range}").get_json()["data"]["throughput"]
        assert len(series["points"]) == buckets and series["points"][-1]["t"] <= time.time()
        assert sum(p["completed"] for p in series["points"]) == 3
    idle = wait_until(lambda: (w := dashboard_queries.list_workers()) and w[0].state == "idle" and w[0],
                      timeout=10, message="the heartbeat to report the worker idle")
    assert idle.jobs_done == idle.claimed == 3 and idle.current_job_ids == []
