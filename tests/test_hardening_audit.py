"""Audit log of operator actions (issue 15): API, dashboard and CLI write who, action, target,
source and when into one bounded Redis stream; GET /api/jobs/audit (admin) and the dashboard show
it newest first."""

from __future__ import annotations

import re
import subprocess
import sys

from core.api.queues import email_queue
from core.config import reload_settings
from core.ops import audit
from core.platform import keys
from core.platform.auth import issue_user_token
from core.schedule.periodic import register_periodic_jobs
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, worker_env

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_api_dashboard_and_cli_actions_are_audited_newest_first(client, api_env):
    register_periodic_jobs()
    by_api = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=600, user_id="alice")
    by_dash = email_queue.enqueue_job("add", {"a": 2, "b": 2}, delay=600)
    by_cli = email_queue.enqueue_job("add", {"a": 3, "b": 3}, delay=600)
    alice = {"Authorization": f"Bearer {issue_user_token('alice')}"}
    assert client.post(f"/api/jobs/{by_api}/cancel", headers=alice).status_code == 200
    assert client.post("/api/jobs/scheduler/periodic-daily-digest/pause", headers=ADMIN).status_code == 200
    page = client.get("/dashboard/login").get_data(as_text=True)
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "csrf_token": nonce})
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/dashboard/").get_data(as_text=True)).group(1)
    assert client.post(f"/dashboard/job/{by_dash}/cancel", data={"csrf_token": csrf}).status_code == 302
    cli = subprocess.run([sys.executable, "-m", "scripts.jobs", "cancel", by_cli], cwd=ROOT, capture_output=True,
                         text=True, env=worker_env(api_env.url), timeout=60)
    assert cli.returncode == 0, cli.stderr

    entries = client.get("/api/jobs/audit", headers=ADMIN).get_json()["data"]["entries"]
    assert [(e["who"].split(":")[0], e["action"], e["target"], e["source"]) for e in entries] == [
        ("cli", "cancel", by_cli, "cli"),
        ("admin", "cancel", by_dash, "dashboard"),
        ("admin", "scheduler.pause", "periodic-daily-digest", "api"),
        ("user", "cancel", by_api, "api"),
    ]
    assert entries[-1]["who"] == "user:alice" and entries[0]["at"] >= entries[-1]["at"] > 0
    assert client.get("/api/jobs/audit", headers=alice).status_code == 403
    page = client.get("/dashboard/audit").get_data(as_text=True).split('id="audit"')[1]
    assert page.index(by_cli) < page.index(by_dash) < page.index("periodic-daily-digest")


def test_refused_actions_are_not_audited_and_the_stream_is_bounded(client, api_env, monkeypatch):
    done = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    assert client.post(f"/api/jobs/{done}/retry", headers=ADMIN).status_code == 409
    assert audit.recent(10) == []
    monkeypatch.setenv("JOBS_AUDIT_MAX_ENTRIES", "100")
    reload_settings()
    for i in range(1000):
        audit.record("admin", "retry", f"job-{i}", "api")
    assert api_env.client().xlen(keys.audit()) < 300  # trimmed (approximately, as XADD MAXLEN ~ does)
    assert audit.recent(1)[0]["target"] == "job-999"
