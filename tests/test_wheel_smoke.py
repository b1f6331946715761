"""The wheel is what we test: build it from this checkout, install it into a fresh venv outside
the checkout (no PYTHONPATH, cwd elsewhere), and use it as a host app would, against a real
redis-server.

- the wheel holds every file of the packages (Lua scripts, templates, static files, shell
  scripts): a data file added to a package and left out of pyproject.toml's package-data fails
  here, not on a user's machine;
- the venv's ``core`` is the installed one, not this checkout's;
- a task's ``.enqueue(...)`` plus ``fikiri-worker --burst`` ends ``completed`` with
  ``mode == "redis"`` (a job that silently ran in the fallback is completed too, so the mode is
  asserted, and the job is read back from Redis itself);
- a dashboard page renders, ``fikiri-jobs stats`` answers, every console script answers ``--help``;
- the install is lean: the wheel goes in WITHOUT extras, so none of the extras' packages
  (gunicorn, prometheus_client, ...) is there, every module of the packages imports all the same,
  and ``/metrics`` answers 501 in the JSON envelope naming ``pip install 'fikiri-jobs[metrics]'``
  (one warning when FikiriJobs mounts it); installing the ``[metrics]`` extra into that venv
  makes it answer Prometheus text (the last test, which uninstalls it again).

One wheel and one venv per session (about 10 s on the CI machine); each test then runs a few
processes of the venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ROOT
from tests.test_readme_host_quickstart import checkout_copy, clean_env, make_venv

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSOLE_SCRIPTS = sorted(PYPROJECT["project"]["scripts"])
NOT_SHIPPED = {"tests", "bench"}  # top-level packages of the checkout that stay out of the wheel
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# what the runtime dependencies leave to extras: (import name, distribution, extra)
LEFT_TO_EXTRAS = [("gunicorn", "gunicorn", "server"), ("prometheus_client", "prometheus_client", "metrics"),
                  ("opentelemetry.sdk", "opentelemetry-sdk", "otel"), ("sentry_sdk", "sentry-sdk", "sentry"),
                  ("psycopg2", "psycopg2-binary", "postgres"), ("httpx", "httpx", "aio")]
ADMIN_TOKEN = "smoke-admin-token-0123456789abcdef"


@dataclass
class Installed:
    wheel: Path
    venv: Path
    host: Path  # a host app's directory: the cwd of every process the tests run

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.host, env=env or clean_env(), capture_output=True, text=True,
                              timeout=timeout)

    def python_code(self, code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run([self.python, "-c", textwrap.dedent(code)], env=env)


def _outside_checkout(path: Path) -> Path:
    assert ROOT not in path.resolve().parents, f"{path} is inside the checkout {ROOT}"
    return path


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of this checkout's tracked and new files."""
    base = _outside_checkout(tmp_path_factory.mktemp("wheel"))
    source = checkout_copy(base / "fikiri-jobs")
    dist = base / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
                          cwd=base, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (built,) = dist.glob("fikiri_jobs-*.whl")
    return built


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory) -> Installed:
    """A fresh venv with the wheel (and its dependencies) installed, and a host directory beside it."""
    base = _outside_checkout(tmp_path_factory.mktemp("installed"))
    venv = make_venv(base / "venv")
    proc = subprocess.run([str(venv / "bin/pip"), "install", "-q", str(wheel)], cwd=base, env=clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    host = base / "host"
    host.mkdir()
    (host / "mytasks.py").write_text(textwrap.dedent('''\
        from core.api.queues import email_queue


        @email_queue.task(max_retries=0)
        def add(a: int, b: int) -> int:
            return a + b
        '''))
    return Installed(wheel, venv, host)


def host_env(redis_url: str, host: Path, **extra: str) -> dict[str, str]:
    """A host app's environment: its own Redis, spool and database; nothing pointing at the checkout."""
    env = clean_env(REDIS_URL=redis_url, JOBS_FALLBACK_SPOOL=str(host / "spool.db"),
                    DATABASE_URL=f"sqlite:///{host / 'jobs.db'}", **extra)
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if p and not p.startswith(str(ROOT)))
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env
    return env


def checkout_files_of_shipped_packages() -> tuple[set[str], set[str]]:
    """The top-level packages of the checkout that ship, and every file under them that git
    knows (tracked or new, not ignored): the code and everything it reads at run time."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - NOT_SHIPPED
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", *packages],
                            check=True, capture_output=True, text=True).stdout.split()
    return packages, {name for name in listed if (ROOT / name).is_file()}


def test_the_wheel_holds_every_file_of_the_packages_and_nothing_else(wheel):
    packages, expected = checkout_files_of_shipped_packages()
    assert {"core", "routes", "scripts", "email_automation", "ai_assistant", "crm"} <= packages
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name for name in names if ".dist-info/" not in name}
    missing = sorted(expected - shipped)
    assert not missing, f"in the checkout's packages but not in the wheel (pyproject.toml package-data?): {missing}"
    assert {name.split("/", 1)[0] for name in shipped} == packages, sorted(shipped)[:20]
    # the run-time data, named: a glob above that matched nothing would fail here too
    data = {name for name in shipped if not name.endswith(".py")}
    assert {f"core/queue/lua/{p.name}" for p in (ROOT / "core/queue/lua").glob("*.lua")} <= data
    assert "routes/templates/dashboard/base.html" in data and "routes/static/dashboard/dashboard.css" in data
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in CONSOLE_SCRIPTS:
        assert f"{script} = " in entry_points


def test_the_venv_imports_the_installed_packages_not_the_checkout(installed):
    proc = installed.python_code('''
        import json, sys
        import ai_assistant, core, core.queue.lua_scripts, crm, email_automation, routes.extension, scripts.jobs
        for name in core.queue.lua_scripts.NAMES:
            core.queue.lua_scripts.source(name)              # every Lua script (and its libraries) is readable
        print(json.dumps({"core": core.__file__, "routes": routes.extension.__file__, "path": sys.path}))
        ''')
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    site_packages = str(installed.venv / "lib")
    for name in ("core", "routes"):
        assert found[name].startswith(site_packages), found
        assert str(ROOT) not in found[name], found
    assert not any(entry.startswith(str(ROOT)) for entry in found["path"]), found["path"]


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_every_console_script_answers_help(installed, script):
    proc = installed.run([installed.bin(script), "--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower() and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_enqueue_then_a_burst_worker_completes_the_job_in_redis(installed, redis_server):
    env = host_env(redis_server.url, installed.host)
    enqueued = installed.python_code('''
        from mytasks import add
        print(add.enqueue(a=2, b=3))
        ''', env=env)
    assert enqueued.returncode == 0, enqueued.stderr[-3000:]
    job_id = enqueued.stdout.strip().splitlines()[-1]
    # in Redis itself, as RQ sees it: not spooled for an in-process run
    fields = redis_server.client().hgetall(f"rq:job:{job_id}")
    assert fields.get(b"status") == b"queued", (fields, enqueued.stderr[-2000:])

    worker = installed.run([installed.bin("fikiri-worker"), "email", "--burst", "--import", "mytasks"], env=env)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-3000:]

    status = installed.python_code(f'''
        import json
        from core.api.queues import get_job
        job = get_job({job_id!r})
        print(json.dumps({{"status": str(getattr(job.status, "value", job.status)), "mode": job.mode,
                          "result": job.result}}))
        ''', env=env)
    assert status.returncode == 0, status.stderr[-3000:]
    job = json.loads(status.stdout.strip().splitlines()[-1])
    assert job == {"status": "completed", "mode": "redis", "result": 5}, (job, worker.stderr[-3000:])
    assert redis_server.client().hget(f"rq:job:{job_id}", "status") == b"finished"


def test_fikiri_jobs_stats_answers(installed, redis_server):
    env = host_env(redis_server.url, installed.host)
    enqueued = installed.python_code('''
        from mytasks import add
        print(add.enqueue(a=1, b=1))
        ''', env=env)
    assert enqueued.returncode == 0, enqueued.stderr[-3000:]
    table = installed.run([installed.bin("fikiri-jobs"), "stats"], env=env)
    assert table.returncode == 0, table.stderr[-3000:]
    assert all(queue in table.stdout for queue in ("email", "ai", "crm")), table.stdout
    as_json = installed.run([installed.bin("fikiri-jobs"), "--json", "stats"], env=env)
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    rows = {row["queue"]: row for row in json.loads(as_json.stdout)}
    assert set(rows) == {"email", "ai", "crm"}
    assert rows["email"]["pending_jobs"] == 1 and rows["ai"]["pending_jobs"] == 0, rows


def test_a_dashboard_page_renders(installed, redis_server):
    """A host app mounting FikiriJobs in the venv: the login page, a login with the admin token,
    the overview page and a static file, through Flask's test client in a venv process."""
    token = "smoke-admin-token-0123456789abcdef"
    env = host_env(redis_server.url, installed.host, JOBS_ADMIN_TOKEN=token,
                   SECRET_KEY="smoke-secret-key-0123456789abcdef")
    proc = installed.python_code(f'''
        import json, re
        from flask import Flask
        from routes.extension import FikiriJobs

        app = Flask(__name__)
        FikiriJobs(app)
        client = app.test_client()
        login = client.get("/dashboard/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.get_data(as_text=True)).group(1)
        posted = client.post("/dashboard/login", data={{"token": {token!r}, "csrf_token": csrf}})
        overview = client.get("/dashboard/")
        css = client.get("/dashboard/static/dashboard.css")
        print(json.dumps({{"login": login.status_code, "posted": posted.status_code,
                          "overview": overview.status_code, "page": overview.get_data(as_text=True),
                          "css": css.status_code, "css_bytes": len(css.get_data())}}))
        ''', env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (found["login"], found["posted"], found["overview"], found["css"]) == (200, 302, 200, 200), found
    assert 'data-queue="email"' in found["page"] and "Redis reachable" in found["page"], found["page"][:2000]
    assert found["css_bytes"] > 0


# --- the lean install: no extras ----------------------------------------------------------------
def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize(("module", "distribution", "extra"), LEFT_TO_EXTRAS)
def test_each_optional_part_is_an_extra_not_a_runtime_dependency(module, distribution, extra):
    runtime = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert requirement_name(distribution) not in runtime
    assert any(requirement_name(r) == requirement_name(distribution) for r in EXTRAS[extra]), EXTRAS[extra]
    assert f"fikiri-jobs[{','.join(e for _, _, e in LEFT_TO_EXTRAS)}]" in EXTRAS["all"]


def test_hiredis_is_a_runtime_dependency_not_an_opt_in():
    """The fast reply parser comes with the plain install (issue 22): no user has to know of it."""
    runtime = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert requirement_name("hiredis") in runtime
    assert "hiredis" not in EXTRAS["all"]


def test_the_venv_has_none_of_the_extras_packages(installed):
    proc = installed.python_code(f'''
        import importlib.metadata, importlib.util, json
        found = {{}}
        for module, distribution, _ in {LEFT_TO_EXTRAS!r}:
            try:
                version = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                version = None
            top = module.split(".")[0]
            found[distribution] = [version, importlib.util.find_spec(top) is not None]
        print(json.dumps(found))
        ''')
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {distribution: [None, False] for _, distribution, _ in LEFT_TO_EXTRAS}, found


def test_every_module_of_the_packages_imports_without_the_extras(installed):
    """An unguarded import of an extra anywhere in the shipped packages fails here."""
    packages, _ = checkout_files_of_shipped_packages()
    proc = installed.python_code(f'''
        import importlib, pkgutil
        failed, count = [], 0
        for name in {sorted(packages)!r}:
            package = importlib.import_module(name)
            for module in pkgutil.walk_packages(package.__path__, name + "."):
                try:
                    importlib.import_module(module.name)
                    count += 1
                except Exception as exc:
                    failed.append(f"{{module.name}}: {{type(exc).__name__}}: {{exc}}")
        print(count)
        print("\\n".join(failed))
        ''')
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, *failed = proc.stdout.strip().splitlines()
    assert int(count) > 40 and not failed, failed


METRICS_SCRAPE = f'''
    import json, logging
    from flask import Flask
    from routes.extension import FikiriJobs

    logging.basicConfig(level=logging.WARNING, format="LOG %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    FikiriJobs(app)
    client = app.test_client()
    admin = {{"Authorization": "Bearer {ADMIN_TOKEN}"}}
    anonymous = client.get("/metrics")
    scraped = client.get("/metrics", headers=admin)
    health = client.get("/api/jobs/health")
    print(json.dumps({{"anonymous": anonymous.status_code, "status": scraped.status_code,
                      "type": scraped.content_type, "body": scraped.get_data(as_text=True),
                      "health": health.status_code}}))
    '''


def scrape_metrics(installed: Installed, redis_url: str) -> tuple[dict, str]:
    env = host_env(redis_url, installed.host, JOBS_ADMIN_TOKEN=ADMIN_TOKEN)
    proc = installed.python_code(METRICS_SCRAPE, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_metrics_without_the_extra_answers_501_naming_it(installed, redis_server):
    found, log = scrape_metrics(installed, redis_server.url)
    assert found["anonymous"] == 401 and found["health"] == 200, found  # the rest of the app works
    assert (found["status"], found["type"]) == (501, "application/json"), found
    body = json.loads(found["body"])
    assert body["success"] is False and body["error"]["code"] == "not_installed", body
    assert "pip install 'fikiri-jobs[metrics]'" in body["error"]["message"], body
    assert "Traceback" not in log, log
    warnings = [line for line in log.splitlines() if line.startswith("LOG WARNING routes.extension")
                and "fikiri-jobs[metrics]" in line]
    assert len(warnings) == 1 and "/metrics answers 501" in warnings[0], log


def test_the_metrics_extra_makes_metrics_answer_prometheus_text(installed, redis_server):
    """Installed as a user would (the wheel with [metrics]), into the same venv; uninstalled after,
    so the venv is lean again for any test that runs later."""
    proc = installed.run([installed.bin("pip"), "install", "-q", f"{installed.wheel}[metrics]"], timeout=300)
    try:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        found, log = scrape_metrics(installed, redis_server.url)
        assert (found["status"], found["health"]) == (200, 200), found
        assert found["type"].startswith("text/plain"), found
        assert "fikiri_jobs_queue_jobs{queue=\"email\",state=\"pending\"} 0.0" in found["body"], found["body"][:2000]
        assert "fikiri-jobs[metrics]" not in log and "answers 501" not in log, log
    finally:
        removed = installed.run([installed.bin("pip"), "uninstall", "-y", "-q", "prometheus_client"])
        assert removed.returncode == 0, removed.stderr[-2000:]
