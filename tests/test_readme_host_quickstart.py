"""The README's "Use it from your own Flask app" quick start, run as written in a fresh venv
outside the checkout: its Python files verbatim, its shell blocks through bash.

What the test changes, and only that: `/path/to/fikiri-jobs` becomes a copy of this checkout,
port 8000 becomes a free port, REDIS_URL points at the test's own redis-server, the request
waits until gunicorn answers (a person typing the lines gives it that time), and the last
status read is repeated until the job has completed; it must have run through Redis (`mode` is
"redis", not "fallback"). Also: `pip install -e` of the checkout works in a fresh venv and gives
the console scripts. checkout_copy, clean_env and make_venv are shared with
tests/test_wheel_smoke.py (the built wheel, installed outside the checkout).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.servers import ROOT, free_port

README = ROOT / "README.md"


def quickstart_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Use it from your own Flask app\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def checkout_copy(dest: Path) -> Path:
    """The tracked and new files of this checkout (not .venv, build output or var/)."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBS_", "REDIS_", "FLASK_", "VIRTUAL_ENV")) and k not in (
               "PYTHONPATH", "SECRET_KEY", "DATABASE_URL")}
    env.update(extra)
    return env


def make_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    return where


def test_the_quick_start_in_a_fresh_venv_outside_the_checkout(redis_server, tmp_path):
    blocks = quickstart_blocks()
    named = [(re.match(r"# (\w+\.py)\b", code), code) for lang, code in blocks if lang == "python"]
    python_files = {match.group(1): code for match, code in named if match}
    assert set(python_files) == {"mytasks.py", "hostapp.py"}
    bash = [code for lang, code in blocks if lang == "bash"]
    install, run = bash[0], bash[1]

    host = tmp_path / "host"
    host.mkdir()
    package = checkout_copy(tmp_path / "fikiri-jobs")
    for name, code in python_files.items():
        (host / name).write_text(code)
    port = free_port()
    env = clean_env(REDIS_URL=redis_server.url)

    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", install.replace("/path/to/fikiri-jobs", str(package))],
                          cwd=host, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    script = []
    for line in run.replace("127.0.0.1:8000", f"127.0.0.1:{port}").splitlines():
        if line.startswith("JOB=$(curl"):
            script.append(f"until curl -sf -o /dev/null http://127.0.0.1:{port}/api/jobs/health; do sleep 0.2; done")
        script.append(line)
        if re.search(r"&\s*(#.*)?$", line):
            script.append('echo "PID=$!"')
    script.append('echo "JOB=$JOB"; echo "TOKEN=$TOKEN"; echo "KEY=$FLASK_SECRET_KEY"')
    log_path = tmp_path / "quickstart.log"
    # output to a file, not a pipe: the background services keep it open after bash exits
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "-eu", "-c", "\n".join(script)], cwd=host, env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pids: list[int] = []
    try:
        try:
            proc.wait(timeout=180)
        finally:
            output = log_path.read_text()
            pids = [int(p) for p in re.findall(r"^PID=(\d+)$", output, re.M)]
        assert proc.returncode == 0, output[-3000:]
        job_id = re.search(r"^JOB=(\S+)$", output, re.M).group(1)
        token = re.search(r"^TOKEN=(\S+)$", output, re.M).group(1)
        assert len(pids) == 2 and '"success":true' in output.replace(" ", ""), output[-3000:]
        deadline = time.monotonic() + 120
        while True:
            body = requests.get(f"http://127.0.0.1:{port}/api/jobs/{job_id}",
                                headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
            if body["data"]["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        assert body["data"]["status"] == "completed", (body, output[-3000:])
        # ran by the worker through Redis: a job the web process ran in its fallback is completed too
        assert body["data"]["mode"] == "redis", (body, output[-3000:])
        assert body["data"]["result"] == "welcome mail sent to user 42"
        # another user's token does not see it
        other = subprocess.run([str(host / "venv/bin/python"), "-c",
                                "import hostapp; from core.platform.auth import issue_user_token; print(issue_user_token('7'))"],
                               cwd=host, capture_output=True, text=True, timeout=60,
                               env={**env, "FLASK_SECRET_KEY": re.search(r"^KEY=(\S+)$", output, re.M).group(1)})
        assert other.returncode == 0, other.stderr
        response = requests.get(f"http://127.0.0.1:{port}/api/jobs/{job_id}",
                                headers={"Authorization": f"Bearer {other.stdout.strip()}"}, timeout=10)
        assert response.status_code == 404
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        # the script itself (its wait-for-health loop, when the services never came up) and anything
        # else it started: its own process group, from start_new_session
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def test_editable_install_gives_the_packages_and_console_scripts(tmp_path):
    package = checkout_copy(tmp_path / "fikiri-jobs")
    venv = make_venv(tmp_path / "venv")
    proc = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-e", str(package)], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for script in ("fikiri-jobs", "fikiri-worker", "fikiri-scheduler"):
        help_run = subprocess.run([str(venv / "bin" / script), "--help"], cwd=tmp_path, env=clean_env(),
                                  capture_output=True, text=True, timeout=60)
        assert help_run.returncode == 0, (script, help_run.stderr[-2000:])
    where = subprocess.run([str(venv / "bin/python"), "-c",
                            "import core, routes.extension, email_automation, ai_assistant, crm, scripts.jobs; "
                            "print(core.__file__)"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                           timeout=60)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(package))  # editable: the code is the checkout's


@pytest.mark.parametrize("extra", ["dev", "bench", "otel", "sentry", "postgres"])
def test_every_extra_is_declared(extra):
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert extra in project["optional-dependencies"]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_the_readme_redis_cli_lines_with_u_show_what_it_says(jobs_env, start_worker):
    """Mirrors README "Redis keys": `redis-cli -u "$REDIS_URL" HGETALL rq:job:<id>` shows a
    the job's `data` (JSON, zlib'd only when that is smaller) and RQ's `finished` for a job the
    API calls completed."""
    from core.api.tasks import wait_for
    from core.queue.rq_compat import decode_data
    from tests.task_fixtures import add

    text = README.read_text()
    assert 'redis-cli -u "$REDIS_URL" HGETALL rq:job:<id>' in text
    start_worker("email")
    job_id = add.enqueue(a=1, b=2)
    assert wait_for(job_id, timeout=60).status == "completed"
    proc = subprocess.run(["redis-cli", "-u", jobs_env.url, "--no-raw", "HGETALL", f"rq:job:{job_id}"],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0
    fields = jobs_env.client().hgetall(f"rq:job:{job_id}")
    assert fields[b"status"] == b"finished" and b'"finished"' in proc.stdout
    assert decode_data(fields[b"data"]) == ("add", {"a": 1, "b": 2})
