"""The README's main command: the demo runs end to end (worker, API, jobs on every queue)."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT, free_port, worker_env


def test_demo_runs_once_and_every_job_ends(redis_server, tmp_path):
    env = worker_env(redis_server.url, {"DEMO_API_PORT": str(free_port()),
                                        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"})
    env.pop("GMAIL_API_BASE_URL", None)
    env.pop("JOBS_TASK_MODULES")
    client = redis_server.client()
    client.set("their:key", "an app's own data")
    before = set(client.keys("*"))
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--once", "--timeout", "60"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"using REDIS_URL {redis_server.url}" in out
    assert set(client.keys("*")) == before  # a shared Redis: the demo leaves nothing behind
    assert "removed the demo's" in out and "Scheduler: not started on your Redis" in out
    assert "All demo jobs have finished." in out
    assert "[retrying ] ai: flaky call" in out and "[completed] ai: flaky call" in out
    assert "[failed   ] crm: invalid contact" in out
    assert "DEMO fake Gmail API" in out and "[completed] email: Gmail sync (full)" in out
    assert "'messages_synced': 30" in out and "'transport': 'outbox'" in out
    assert "Stored messages of user 'demo' by classification:" in out and "lead=" in out
    assert "-> 200 status=completed" in out
    # with --once the services stop at the end, so no curl lines that would point at nothing
    assert "--once: the services stop now" in out and "curl -s" not in out


def test_without_redis_url_the_demo_owns_a_private_redis(tmp_path):
    env = worker_env("unused", {"DEMO_API_PORT": str(free_port()), "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"})
    for name in ("REDIS_URL", "GMAIL_API_BASE_URL", "JOBS_TASK_MODULES"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--once", "--timeout", "60"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Redis: started a private redis-server at redis://127.0.0.1:" in proc.stdout
    assert "6379" not in proc.stdout.split("Redis:", 1)[1].splitlines()[0]
    assert "All demo jobs have finished." in proc.stdout


def test_with_no_redis_at_all_the_demo_runs_in_fallback_mode_and_says_so(tmp_path):
    env = worker_env("unused", {"DEMO_API_PORT": str(free_port()), "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
                                "JOBS_FALLBACK_SPOOL": str(tmp_path / "spool.db"), "PATH": "/nonexistent"})
    for name in ("REDIS_URL", "GMAIL_API_BASE_URL", "JOBS_TASK_MODULES"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--once", "--timeout", "60"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FALLBACK MODE" in proc.stdout and "All demo jobs have finished." in proc.stdout
    assert "-> 200 status=completed" in proc.stdout  # gunicorn, another process, reads the spool
