"""The dashboard's flow-control views and actions (Flask test client, real Redis, real workers):
paused queues with a Pause/Resume button, rate-limited jobs with their reason, Stop on a running job."""

from __future__ import annotations

import html

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.ops import audit
from core.platform.auth import issue_user_token
from core.platform.connection import get_redis
from core.queue.job_model import JobStatus
from tests.conftest import finished
from tests.servers import wait_until
from tests.test_dashboard_pages import csrf, login


def test_pause_and_resume_from_the_overview_show_in_the_queue_table(client):
    login(client)
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert 'id="pause-email"' in overview and "Paused" in overview
    done = client.post("/dashboard/queue/email/pause", data={"csrf_token": csrf(client), "next": "/dashboard/"})
    assert done.status_code == 302 and email_queue.paused
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert 'id="resume-email"' in overview and "queue email paused" in overview
    data = client.get("/dashboard/api/overview").get_json()["data"]
    assert next(q for q in data["queues"] if q["queue"] == "email")["paused"] is True
    assert 'id="queue-paused"' in client.get("/dashboard/queue/email").get_data(as_text=True)
    assert client.post("/dashboard/queue/email/resume", data={"csrf_token": csrf(client)}).status_code == 302
    assert not email_queue.paused
    assert [e["action"] for e in audit.recent(2)] == ["resume", "pause"]
    assert client.post("/dashboard/queue/email/explode", data={"csrf_token": csrf(client)}).status_code == 404
    assert client.post("/dashboard/queue/nope/pause", data={"csrf_token": csrf(client)}).status_code == 404


def test_a_user_cannot_pause_a_queue(client):
    login(client, issue_user_token("alice"))
    assert 'id="pause-email"' not in client.get("/dashboard/").get_data(as_text=True)
    assert client.post("/dashboard/queue/email/pause", data={"csrf_token": csrf(client)}).status_code == 403
    assert not email_queue.paused


def test_rate_limited_jobs_show_their_reason_in_lists_and_on_the_job_page(client, start_worker):
    start_worker("email", "--worker-class", "simple")
    ids = email_queue.enqueue_many("add", [{"a": i, "b": 0} for i in range(5)], rate_limit="1/m", rate_key="slow")
    wait_until(lambda: sum(1 for i in ids if get_job(i).reason) == 4, timeout=10)
    login(client)
    queue_page = html.unescape(client.get("/dashboard/queue/email?state=delayed").get_data(as_text=True))
    assert queue_page.count("rate limited: email slow 1/min") == 4
    assert "4 delayed job(s) wait for a rate or concurrency limit" in queue_page
    job_page = html.unescape(client.get(f"/dashboard/job/{ids[-1]}").get_data(as_text=True))
    assert 'id="job-reason">rate limited: email slow 1/min<' in job_page
    overview = client.get("/dashboard/api/overview").get_json()["data"]
    assert next(q for q in overview["queues"] if q["queue"] == "email")["limited_jobs"] == 4


def test_stop_a_running_job_from_its_page(client, start_worker):
    start_worker("email", "--worker-class", "threaded", "--concurrency", "2", env={"JOBS_STOP_GRACE": "1"})
    job_id = email_queue.enqueue_job("stoppable", {"key": "test:dash", "seconds": 30}, user_id="alice")
    wait_until(lambda: get_redis().get("test:dash:runs") == b"1", timeout=10)
    login(client, issue_user_token("alice"))  # the owner may stop it
    page = client.get(f"/dashboard/job/{job_id}").get_data(as_text=True)
    assert 'id="stop"' in page
    done = client.post(f"/dashboard/job/{job_id}/stop", data={"csrf_token": csrf(client, f"/dashboard/job/{job_id}")})
    assert done.status_code == 302
    job = finished(job_id, timeout=10)
    assert job.status == JobStatus.CANCELED and job.error == "stopped by user:alice"
    bob = client.application.test_client()
    login(bob, issue_user_token("bob"))
    other = email_queue.enqueue_job("stoppable", {"key": "test:dash2", "seconds": 30}, user_id="alice")
    wait_until(lambda: get_redis().get("test:dash2:runs") == b"1", timeout=10)
    refused = bob.post(f"/dashboard/job/{other}/stop", data={"csrf_token": csrf(bob)})
    assert refused.status_code == 404 and get_job(other).status == JobStatus.RUNNING


def test_batch_page_shows_progress_and_members_to_its_owner(client, start_worker):
    from core.workflows.chains import enqueue_batch

    start_worker("email", "--worker-class", "simple")
    batch_id = enqueue_batch("email", "add", [{"a": i, "b": 1} for i in range(3)], user_id="alice")
    wait_until(lambda: get_redis().hget(f"fikiri:batch:{batch_id}", "ended_at"), timeout=15)
    login(client, issue_user_token("alice"))
    page = html.unescape(client.get(f"/dashboard/batch/{batch_id}").get_data(as_text=True))
    assert "3: <span id=\"batch-completed\">3</span> completed, 0 failed, 0 canceled, 0 still to run" in page
    assert 'id="batch-state">done<' in page and page.count("/dashboard/job/") >= 3
    from core.api.batches import batch_job_ids

    member = batch_job_ids(batch_id)[0]
    assert f'id="job-batch" href="/dashboard/batch/{batch_id}"' in client.get(f"/dashboard/job/{member}").get_data(as_text=True)
    loner = email_queue.enqueue_job("add", {"a": 0, "b": 0}, user_id="alice")  # not in a batch: no link
    assert 'id="job-batch"' not in client.get(f"/dashboard/job/{loner}").get_data(as_text=True)
    bob = client.application.test_client()
    login(bob, issue_user_token("bob"))
    assert bob.get(f"/dashboard/batch/{batch_id}").status_code == 404
