"""Errors by audience (issue 15): a failed job's error, read with a user token, is the exception's
type and message with no traceback and no file path; the admin sees the traceback in the API, the
dashboard and the CLI. Real worker process, gunicorn, CLI subprocess."""

from __future__ import annotations

import re
import subprocess
import sys

import requests

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.platform.auth import issue_user_token
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, wait_until, worker_env

PATHISH = re.compile(r"(/[\w.-]+){2,}|site-packages|\.py\b|Traceback|File \"")


def failed_job(user: str, message: str) -> str:
    job_id = email_queue.enqueue_job("always_fail", {"message": message}, user_id=user, max_retries=0)
    wait_until(lambda: (j := get_job(job_id)) and j.status.value == "failed", timeout=30, message="the failure")
    return job_id


def test_user_sees_type_and_message_admin_sees_the_traceback_over_http(api_server, start_worker):
    start_worker("email")
    job_id = failed_job("alice", "card declined for order 7 (see /srv/app/billing/charge.py)")
    as_user = requests.get(api_server.url(f"/api/jobs/{job_id}"),
                           headers={"Authorization": f"Bearer {issue_user_token('alice')}"}, timeout=5).json()
    error = as_user["data"]["error"]
    assert error == "ValueError: card declined for order 7 (see <path>)"
    assert not PATHISH.search(error)
    recent = requests.get(api_server.url("/api/jobs/user/alice/recent"),
                          headers={"Authorization": f"Bearer {issue_user_token('alice')}"}, timeout=5).json()
    assert all(not PATHISH.search(j["error"] or "") for j in recent["data"]["jobs"])
    as_admin = requests.get(api_server.url(f"/api/jobs/{job_id}"),
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5).json()
    assert as_admin["data"]["error"].startswith("Traceback") and "task_fixtures.py" in as_admin["data"]["error"]


def test_dashboard_job_page_by_audience(client, start_worker):
    start_worker("email")
    job_id = failed_job("alice", "no stock")
    user_page = client.get(f"/dashboard/job/{job_id}",
                           headers={"Authorization": f"Bearer {issue_user_token('alice')}"}).get_data(as_text=True)
    error = re.search(r'<pre class="traceback">(.*?)</pre>', user_page, re.S).group(1)
    assert error == "ValueError: no stock" and not PATHISH.search(user_page.split("<h2>Payload")[1].split("</main>")[0])
    admin_page = client.get(f"/dashboard/job/{job_id}",
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_data(as_text=True)
    assert "Traceback" in admin_page and "task_fixtures.py" in admin_page


def test_cli_shows_the_admin_the_traceback(api_env, start_worker):
    start_worker("email")
    job_id = failed_job("alice", "cli sees all")
    out = subprocess.run([sys.executable, "-m", "scripts.jobs", "status", job_id], cwd=ROOT, capture_output=True,
                         text=True, env=worker_env(api_env.url), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" in out.stdout and "ValueError: cli sees all" in out.stdout
