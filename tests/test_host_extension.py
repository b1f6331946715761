"""A host app mounts Fikiri Jobs with the extension: prefixes, switches, app.config settings,
the body limit on the host, the OpenAPI document of exactly what is mounted, and `flask jobs`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from flask import Flask, request

from core.config import set_overrides
from core.platform.auth import issue_user_token
from core.platform.connection import reset_connections
from routes.extension import FikiriJobs
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, worker_env

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def host_env(jobs_env, monkeypatch) -> Iterator:
    """jobs_env without any token in the environment: the host's app.config must supply them."""
    for name in ("JOBS_ADMIN_TOKEN", "SECRET_KEY", "JOBS_INSECURE_DEV"):
        monkeypatch.delenv(name, raising=False)
    yield jobs_env
    set_overrides({})  # app.config overrides are process-wide; leave none for the next test
    reset_connections()


def make_host(redis_url: str, **config: object) -> Flask:
    app = Flask("host_app")
    app.config.update(JOBS_ADMIN_TOKEN=ADMIN_TOKEN, SECRET_KEY="host-secret-key-0123456789",
                      REDIS_URL=redis_url, MAX_CONTENT_LENGTH=None, **config)

    @app.errorhandler(404)
    def host_not_found(exc):
        return "host says: no such page", 404

    @app.post("/upload")
    def upload():
        return {"bytes": len(request.get_data())}

    FikiriJobs(app)
    return app


def _flask_rule_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def mounted_routes(app: Flask, prefixes: tuple[str, ...]) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if any(rule.rule == p or rule.rule.startswith(p + "/") for p in prefixes):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((method.lower(), _flask_rule_to_openapi(rule.rule)))
    return routes


def test_default_mount_serves_every_part(host_env):
    app = make_host(host_env.url)
    client = app.test_client()
    assert client.get("/api/jobs/health").status_code == 200
    assert client.get("/api/jobs/scheduler/status", headers=ADMIN).status_code == 200
    assert client.get("/api/jobs/monitor/stats", headers=ADMIN).status_code == 200
    assert client.get("/metrics", headers=ADMIN).status_code == 200
    assert client.get("/dashboard/login").status_code == 200
    # settings came from app.config: the admin token is nowhere in the environment
    assert client.get("/api/jobs/queues/stats", headers=ADMIN).get_json()["success"] is True


def test_prefixes_switches_and_the_document_of_exactly_what_is_mounted(host_env):
    app = make_host(host_env.url, JOBS_API_PREFIX="/jobs", JOBS_OPS_PREFIX="/ops", JOBS_METRICS_PATH="/ops/metrics",
                    JOBS_MOUNT_DASHBOARD=False)
    client = app.test_client()
    assert client.get("/jobs/health").get_json()["data"]["redis"] is True
    assert client.get("/ops/scheduler/status", headers=ADMIN).status_code == 200
    assert client.get("/ops/metrics", headers=ADMIN).data.startswith(b"# HELP")
    for gone in ("/api/jobs/health", "/dashboard/login", "/metrics"):
        response = client.get(gone)
        assert (response.status_code, response.data) == (404, b"host says: no such page"), gone
    # unknown paths under our prefixes answer in the envelope; the host's keep its handler
    assert client.get("/jobs/nope/nope/nope").get_json()["error"]["code"] == "not_found"
    assert client.get("/elsewhere").data == b"host says: no such page"
    document = client.get("/jobs/openapi.json").get_json()
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert documented == mounted_routes(app, ("/jobs", "/ops"))
    assert "/ops/scheduler/status" in document["paths"] and "/jobs/{job_id}" in document["paths"]


def test_switched_off_ops_leave_the_document(host_env):
    app = make_host(host_env.url, JOBS_MOUNT_OPS=False, JOBS_MOUNT_METRICS=False)
    client = app.test_client()
    assert client.get("/api/jobs/scheduler/status", headers=ADMIN).status_code == 404
    paths = client.get("/api/jobs/openapi.json").get_json()["paths"]
    assert not [p for p in paths if "/scheduler" in p or "/monitor" in p]
    assert {(m, p) for p, ops in paths.items() for m in ops} == mounted_routes(app, ("/api/jobs",))


def test_body_limit_applies_on_the_host_and_only_to_our_routes(host_env):
    app = make_host(host_env.url)
    client = app.test_client()
    big = json.dumps({"prompt": "x" * 300_000})
    response = client.post("/api/jobs/ai/trigger", data=big, content_type="application/json", headers=ADMIN)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert client.post("/upload", data=b"y" * 300_000).get_json() == {"bytes": 300_000}


def test_keyword_options_override_config(host_env):
    app = Flask("host_kw")
    app.config.update(JOBS_ADMIN_TOKEN=ADMIN_TOKEN, REDIS_URL=host_env.url)
    jobs = FikiriJobs(api_prefix="/background", dashboard=False, metrics=False)
    jobs.init_app(app)
    assert jobs.mounted == {"api": "/background", "ops": "/background"}  # ops follow the API by default
    assert app.test_client().get("/background/health").status_code == 200
    with pytest.raises(TypeError, match="unknown FikiriJobs option"):
        FikiriJobs(dashbord=False)


def test_a_user_token_polls_its_job_on_the_host(host_env):
    app = make_host(host_env.url)
    client = app.test_client()
    token = issue_user_token("u-7")
    response = client.post("/api/jobs/ai/trigger", json={"prompt": "hello"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202
    job_id = response.get_json()["data"]["job_id"]
    status = client.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert status["data"]["status"] == "pending"


def test_flask_jobs_cli_group(host_env):
    app = make_host(host_env.url)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["jobs", "--json", "stats"])
    assert result.exit_code == 0, result.output
    assert {row["queue"] for row in json.loads(result.output)} == {"email", "ai", "crm"}
    commands = runner.invoke(args=["jobs", "--help"]).output
    for name in ("worker", "scheduler", "stats", "status", "retry", "cancel", "enqueue"):
        assert re.search(rf"^\s+{name}\b", commands, re.M), (name, commands)
    assert "run" in runner.invoke(args=["jobs", "scheduler", "--help"]).output


def test_a_missing_task_module_names_itself_the_setting_and_the_path(tmp_path):
    env = worker_env("redis://127.0.0.1:1/0", {"JOBS_TASK_MODULES": "tests.task_fixtures,host_tasks_that_do_not_exist"})
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "rq_worker.py"), "--burst"], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "task module 'host_tasks_that_do_not_exist' (from the JOBS_TASK_MODULES setting)" in proc.stderr
    assert "sys.path searched:" in proc.stderr and str(ROOT) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_flask_jobs_worker_and_status_from_the_command_line(jobs_env):
    from core.api.tasks import wait_for
    from tests.task_fixtures import add

    job_id = add.enqueue(a=4, b=5)
    env = worker_env(jobs_env.url, {"FLASK_JOBS_ADMIN_TOKEN": ADMIN_TOKEN})
    flask = [sys.executable, "-m", "flask", "--app", "tests.host_app", "jobs"]
    worker = subprocess.run([*flask, "worker", "email", "--burst"], cwd=str(ROOT), env=env, capture_output=True,
                            text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert wait_for(job_id, timeout=5).result == 9
    status = subprocess.run([*flask, "--json", "status", job_id], cwd=str(ROOT), env=env, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)["status"] == "completed"


def test_the_dashboard_under_its_own_prefix_keeps_its_redirects_there(host_env):
    app = make_host(host_env.url, JOBS_DASHBOARD_PREFIX="/ops/board", JOBS_SESSION_COOKIE_SECURE=False)
    client = app.test_client()
    first = client.get("/ops/board/")
    assert first.status_code == 302 and first.headers["Location"].startswith("/ops/board/login")
    page = client.get("/ops/board/login?next=/ops/board/failures")
    assert page.status_code == 200
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    login = client.post("/ops/board/login?next=/ops/board/failures",
                        data={"token": ADMIN_TOKEN, "csrf_token": token})
    assert login.status_code == 302 and login.headers["Location"] == "/ops/board/failures"
    assert client.get("/ops/board/failures").status_code == 200
