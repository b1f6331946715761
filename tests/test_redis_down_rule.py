"""Only a lost connection is "Redis down" (core.platform.connection.REDIS_DOWN).

A ResponseError from a live Redis, a wrong password, or a package without its Lua scripts must
reach the caller as an error and never send the job to the in-process fallback, where it would
run in the web process and count as success. A --burst worker gives up on an unreachable Redis.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.errors import JobsInternalError
from core.fallback.executor import get_fallback
from core.platform.connection import REDIS_DOWN, is_redis_down, reset_connections
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, free_port, worker_env


def spooled_nothing(job_id: str) -> bool:
    return get_fallback().pending_count() == 0 and get_fallback().get(job_id) is None


@pytest.mark.parametrize("break_redis", ["wrongtype", "oom"])
def test_a_redis_error_answer_raises_500_and_spools_nothing(jobs_env, break_redis):
    client = jobs_env.client()
    job_id = f"broken-{break_redis}"
    if break_redis == "wrongtype":
        client.set(f"rq:job:{job_id}", "not a hash")  # the enqueue script's first read answers WRONGTYPE
    else:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # every write is refused with OOM
    with pytest.raises(JobsInternalError) as raised:
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id=job_id)
    error, cause = raised.value, raised.value.__cause__
    assert error.http_status == 500 and error.code == "internal_error"
    assert isinstance(cause, redis.ResponseError) and not is_redis_down(cause)
    assert "enqueue of 'add' on queue email" in error.message and type(cause).__name__ in error.message
    client.config_set("maxmemory", "0")
    assert spooled_nothing(job_id)
    if break_redis == "oom":
        assert get_job(job_id) is None
    else:
        assert client.get(f"rq:job:{job_id}") == b"not a hash"
    assert email_queue.is_connected()  # the health check still says up: nothing was marked down


def test_a_wrong_password_is_not_redis_down(jobs_env):
    jobs_env.client().config_set("requirepass", "s3cret-pw")  # REDIS_URL has no password
    reset_connections()
    try:
        with pytest.raises(JobsInternalError) as raised:
            email_queue.enqueue_job("add", {"a": 1, "b": 2}, job_id="no-auth")
        assert isinstance(raised.value.__cause__, redis.AuthenticationError), repr(raised.value.__cause__)
        assert spooled_nothing("no-auth")
    finally:
        redis.Redis(port=jobs_env.port, password="s3cret-pw").config_set("requirepass", "")
        reset_connections()


def test_the_api_answers_500_for_a_redis_error_and_503_only_when_unreachable(client, api_env):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api_env.client().set("rq:job:not-a-hash", "x")  # HMGET on it answers WRONGTYPE
    answer = client.get("/api/jobs/not-a-hash", headers=headers)
    body = answer.get_json()
    assert answer.status_code == 500 and body["error"]["code"] == "internal_error", body
    assert "ResponseError" in body["error"]["message"] and "Traceback" not in body["error"]["message"]
    api_env.stop()
    reset_connections()
    down = client.get("/api/jobs/queue/email/stats", headers=headers)
    assert down.status_code == 503 and down.get_json()["error"]["code"] == "unavailable"


def test_only_connection_errors_count_as_down():
    assert redis.ConnectionError in REDIS_DOWN and redis.TimeoutError in REDIS_DOWN
    assert not any(issubclass(OSError, kind) for kind in REDIS_DOWN)
    assert is_redis_down(redis.ConnectionError("refused")) and is_redis_down(redis.TimeoutError("slow"))
    for not_down in (FileNotFoundError("lua"), redis.ResponseError("WRONGTYPE"), redis.AuthenticationError("pw")):
        assert not is_redis_down(not_down)


def test_a_burst_worker_without_redis_exits_1_naming_the_redis(tmp_path):
    port = free_port()  # nothing listens there
    env = worker_env(f"redis://:hunter2-secret@127.0.0.1:{port}/3")
    env["JOBS_WORKER_BURST_REDIS_TIMEOUT"] = "2"
    done = subprocess.run([sys.executable, "scripts/rq_worker.py", "crm", "--burst", "--worker-class", "simple"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"redis://127.0.0.1:{port}/3 unreachable for 2s" in output and "gives up" in output
    assert "Connection refused" in output  # the last error
    assert "hunter2" not in output


def test_a_package_missing_a_lua_script_fails_loudly_naming_the_file(tmp_path):
    for package in ("core", "scripts", "routes", "email_automation", "ai_assistant", "crm"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    missing = tmp_path / "core" / "queue" / "lua" / "claim.lua"
    missing.unlink()
    env = worker_env("redis://127.0.0.1:1/0")
    env["PYTHONPATH"] = str(tmp_path)
    worker = subprocess.run([sys.executable, "scripts/rq_worker.py", "--burst"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode != 0 and str(missing) in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr
    web = subprocess.run([sys.executable, "-c", "import core.api.queues"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert web.returncode != 0 and "MissingScriptError" in web.stderr and str(missing) in web.stderr
