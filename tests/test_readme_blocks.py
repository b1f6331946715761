"""Every ```python and ```bash block in README.md is run by a test, or says why not.

The guard: a test claims a block by fetching it through ``tests.readme_blocks.readme_block(section,
line)`` with literal arguments (read here from the test files' syntax trees, inside ``test_``
functions), and that call fails at run time unless exactly one block matches. A block no test
claims fails the guard unless the line above it is a visible "_Not run by the tests: <why>._" note.
The quick start is run by tests/test_readme_host_quickstart.py, which reads its section by
itself: its claims are listed in EXTERNAL and checked to name a test that exists there.

The rest of this file runs the blocks no other test runs, as written, against the test's own
redis-server, worker processes and gunicorn; only the substitutions each test names are made
(a free port for 5000, a real job id for ``<id>``)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.readme_blocks import (
    ROOT,
    Block,
    bash,
    commands,
    matching,
    readme_block,
    readme_blocks,
    shell_env,
    substitute,
)

TESTS = ROOT / "tests"

# Blocks run by a test that reads the README by itself: (section, a line of the block) -> the test.
EXTERNAL = {
    ("Use it from your own Flask app", "python3 -m venv venv"):
        "tests/test_readme_host_quickstart.py::test_the_quick_start_in_a_fresh_venv_outside_the_checkout",
    ("Use it from your own Flask app", "# mytasks.py: your tasks"):
        "tests/test_readme_host_quickstart.py::test_the_quick_start_in_a_fresh_venv_outside_the_checkout",
    ("Use it from your own Flask app", "# hostapp.py: your Flask app"):
        "tests/test_readme_host_quickstart.py::test_the_quick_start_in_a_fresh_venv_outside_the_checkout",
    ("Use it from your own Flask app", "venv/bin/gunicorn -b 127.0.0.1:8000 hostapp:app &"):
        "tests/test_readme_host_quickstart.py::test_the_quick_start_in_a_fresh_venv_outside_the_checkout",
}


# --- the guard ----------------------------------------------------------------------------------
def claims_in(path: Path) -> list[tuple[str, str, str]]:
    """``(section, line, "file::test")`` for each literal ``readme_block(...)`` call in a test function."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) or not function.name.startswith("test_"):
            continue
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                    == "readme_block") or any(k.arg == "text" for k in node.keywords):
                continue
            args = node.args[:2]
            assert len(args) == 2 and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args), (
                f"{path.name}:{node.lineno}: readme_block() takes a literal section and line, so this guard can read it")
            skipped = [ast.unparse(d) for d in function.decorator_list if re.search(r"mark\.(skip|xfail)", ast.unparse(d))]
            assert not skipped, (f"{path.name}::{function.name} claims a README block but may be skipped ({skipped}): "
                                 "a claim must come from a test that always runs")
            found.append((args[0].value, args[1].value, f"tests/{path.name}::{function.name}"))
    return found


def all_claims() -> list[tuple[str, str, str]]:
    claims = [claim for path in sorted(TESTS.glob("test_*.py")) for claim in claims_in(path)]
    return claims + [(section, line, test) for (section, line), test in EXTERNAL.items()]


def problems(blocks: list[Block], claims: list[tuple[str, str, str]]) -> list[str]:
    """What is wrong: a claim matching no block or several, a block neither claimed nor noted."""
    out = []
    claimed: dict[int, list[str]] = {}
    for section, line, test in claims:
        found = matching(blocks, section, line)
        if len(found) != 1:
            out.append(f"{test} claims the block under '## {section}' with a line containing {line!r}, "
                       f"but {len(found)} blocks match")
        for block in found[:1] if len(found) == 1 else []:
            claimed.setdefault(block.line, []).append(test)
    for block in blocks:
        if block.line not in claimed and block.note is None:
            out.append(f"{block} is run by no test and has no '_Not run by the tests: <why>._' line above it")
    return out


def test_every_python_and_bash_block_is_run_by_a_test_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) >= 30  # the parser still sees the README's blocks
    found = problems(blocks, all_claims())
    assert not found, "\n".join(found)


def test_the_external_claims_name_tests_that_exist_and_read_the_section():
    for (section, _line), test in EXTERNAL.items():
        path, name = test.split("::")
        source = (ROOT / path).read_text()
        functions = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}
        assert name in functions, f"{test} no longer exists: claim the blocks of '## {section}' anew"
        assert f"## {section}" in source, f"{path} no longer reads '## {section}' of the README"


def test_the_guard_fails_for_an_unclaimed_block_a_changed_block_and_a_reasonless_note():
    text = ("## One\n\n```python\nprint('a')\n```\n\n_Not run by the tests: needs systemd as PID 1._\n\n"
            "```bash\nsudo systemctl start x\n```\n\n_Not run by the tests:_\n\n```bash\nrm -rf var\n```\n"
            "\n```text\nnot code\n```\n\n- a list:\n\n  ```sh\n  make\n  ```\n")
    blocks = readme_blocks(text)
    assert [b.language for b in blocks] == ["python", "bash", "bash", "sh"]  # the text block is not code
    assert blocks[1].note and blocks[2].note is None                 # a note must give a reason
    claim = [("One", "print('a')", "t::test_a")]
    assert [p.split(" is run")[0] for p in problems(blocks, claim)] == [str(blocks[2]), str(blocks[3])]
    changed = [("One", "print('b')", "t::test_a")]                    # the block's text changed
    assert any("t::test_a claims" in p and "0 blocks match" in p for p in problems(blocks, changed))
    assert any("README.md:3 " in p for p in problems(blocks, changed))
    with pytest.raises(LookupError, match="0 blocks"):
        readme_block("One", "print('b')", text=text)
    assert readme_block("One", "systemctl", text=text).line == 9


# --- running the blocks -------------------------------------------------------------------------
def run_python(block: Block, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    return namespace


def ran_in_redis(job_id: str, status: str = "completed", timeout: float = 60):
    job = finished(job_id, timeout=timeout)
    assert job.status.value == status, (job.status, job.error)
    assert job.mode == "redis", f"{job_id} ran in the {job.mode}, not in Redis"
    return job


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


HOST_MODULES = ("mytasks", "mailviews", "leadtasks", "myapp", "myapp.tasks")  # written by the tests below


@pytest.fixture
def registry_restored(jobs_env):
    """Blocks that declare tasks register them in this process, and some are imported as the host
    app's modules: take both away again after."""
    from core.queue import task_registry

    saved = {queue: dict(tasks) for queue, tasks in task_registry._tasks.items()}
    yield
    task_registry._tasks.clear()
    task_registry._tasks.update(saved)
    for name in HOST_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def gunicorn(api_env, tmp_path):
    """gunicorn serving create_app() (as the README's port 5000 does), with short SSE streams so a
    ``curl -N`` ends by itself."""
    from tests.api_server import ApiServer
    from tests.conftest import ADMIN_TOKEN, SECRET_KEY

    server = ApiServer(api_env.url, {"JOBS_ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": SECRET_KEY,
                                     "JOBS_EVENTS_STREAM_MAX_SECONDS": "2", "JOBS_EVENTS_HEARTBEAT": "1"},
                       tmp_path / "gunicorn.log")
    yield server
    server.stop()


def curl_env(api_env, **extra: str) -> dict[str, str]:
    from tests.conftest import ADMIN_TOKEN, SECRET_KEY

    return shell_env(api_env.url, JOBS_ADMIN_TOKEN=ADMIN_TOKEN, ADMIN_TOKEN=ADMIN_TOKEN, SECRET_KEY=SECRET_KEY,
                     **extra)


def at_port(code: str, server) -> str:
    return substitute(code, {"127.0.0.1:5000": f"127.0.0.1:{server.port}"})


def finished(job_id: str, timeout: float = 60):
    from tests.conftest import finished as wait_finished

    return wait_finished(job_id, timeout=timeout)


# "Two commands on a fresh machine" ---------------------------------------------------------------
def test_two_commands_the_demo_runs_until_ctrl_c(redis_server, tmp_path):
    import contextlib
    import os
    import signal

    from tests.servers import free_port, wait_until, worker_env

    demo, suite = commands(readme_block("Two commands on a fresh machine", "bash scripts/run_demo.sh").code)
    assert suite.startswith("bash scripts/run_tests.sh")  # the suite itself: not run here (see its note)
    env = worker_env(redis_server.url, {"DEMO_API_PORT": str(free_port()),
                                        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"})
    for name in ("GMAIL_API_BASE_URL", "JOBS_TASK_MODULES"):
        env.pop(name, None)
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        # Ctrl-C reaches a terminal's foreground job with SIGINT at its default; a test run started
        # in the background (CI) ignores SIGINT, and children inherit that, so set it back here.
        proc = subprocess.Popen(["bash", "-c", demo], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_until(lambda: "press Ctrl-C to stop." in log_path.read_text() or proc.poll() is not None,
                   timeout=150, message="the demo's jobs and its services")
        assert proc.poll() is None, log_path.read_text()[-3000:]  # without --once it keeps serving
        assert "All demo jobs have finished." in log_path.read_text()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the demo and anything of its group still there
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = log_path.read_text()
    assert "[completed] email: Gmail sync (full)" in out and "curl -s" in out
    client = redis_server.client()
    assert client.dbsize() == 0  # a REDIS_URL given: it removed every key it made


# "Use it from your own Flask app": tasks, results, waiting, cancelling -----------------------------
def test_task_object_calls_run_as_written(jobs_env, start_worker, tmp_path, monkeypatch, registry_restored):
    from core.api.jobs import get_job
    from core.errors import JobsError

    mytasks = readme_block("Use it from your own Flask app", "# mytasks.py: your tasks").code
    (tmp_path / "mytasks.py").write_text(mytasks)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mytasks as module  # noqa: F401  (registers send_welcome in this process, as the host app does)

    start_worker("email", "--worker-class", "simple",
                 env={"JOBS_TASK_MODULES": "mytasks", "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    block = readme_block("Use it from your own Flask app", "job = wait_for(job_id, timeout=30)")
    namespace = {"send_welcome": sys.modules["mytasks"].send_welcome}
    run_python(block, namespace)
    job = namespace["job"]
    assert job.status.value == "completed" and job.result == "welcome mail sent to user 42" and job.mode == "redis"
    canceled = get_job("welcome-42")  # the block's last line: the delayed job, canceled before it ran
    assert canceled.status.value == "canceled" and canceled.payload == {"user_id": "42"}
    with pytest.raises(JobsError) as again:  # as its comment says: no longer pending, delayed or retrying
        namespace["cancel_job"]("welcome-42")
    assert again.value.http_status == 409
    assert get_job(namespace["job_id"]).mode == "redis"
    high = [j for j in map(get_job_str, jobs_env.client().zrange("rq:finished:fikiri:email", 0, -1))
            if j and j.max_retries == 5]
    assert len(high) == 1 and high[0].result == "welcome mail sent to user 42"


# "Enqueue from a Flask handler" ---------------------------------------------------------------------
def test_the_flask_handler_answers_202_and_the_sync_completes(jobs_env, fake_gmail, start_worker, registry_restored,
                                                              tmp_path, monkeypatch):
    from flask import Flask

    from core.platform.db import session_scope
    from email_automation.gmail_sync_jobs import connect_account, ensure_sync_schema
    from email_automation.models import SyncJob

    fake_gmail.add_messages(3)
    ensure_sync_schema()
    with session_scope() as session:  # the sync row the example's {"job_id": 123} names
        session.add(SyncJob(id=123, user_id="42", sync_type="manual", status="pending"))
    connect_account("42", "u42@example.com", "demo-access-token", "demo-refresh-token")
    start_worker("email")

    # the handler as a module of the host app
    code = readme_block("Enqueue from a Flask handler", '"process_gmail_sync", {"job_id": 123}').code
    (tmp_path / "mailviews.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mailviews

    app = Flask(__name__)
    app.register_blueprint(mailviews.bp)
    response = app.test_client().post("/users/42/inbox/sync")
    assert response.status_code == 202, response.get_json()
    job = ran_in_redis(response.get_json()["job_id"])
    assert job.user_id == "42" and job.task_name == "process_gmail_sync"
    assert job.result["sync_job_id"] == 123 and job.result["messages_synced"] == 3


def test_registering_your_own_task(jobs_env, start_worker, registry_restored, tmp_path):
    from core.api.queues import crm_queue

    block = readme_block("Enqueue from a Flask handler", "def refresh_lead_score(lead_id: int) -> dict:")
    (tmp_path / "leadtasks.py").write_text(block.code)  # the module JOBS_TASK_MODULES names, for the worker
    namespace = run_python(block)                        # and the web process's own registration
    assert namespace["refresh_lead_score"].queue is crm_queue
    start_worker("crm", env={"JOBS_TASK_MODULES": "leadtasks", "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    job = ran_in_redis(crm_queue.enqueue_job("refresh_lead_score", {"lead_id": 7}))
    assert job.result is None and job.max_retries == 3


# "Flow control" (the Python blocks: tests/test_readme_examples.py) ---------------------------------
def test_the_queue_wide_rate_from_the_environment(jobs_env):
    from core.api.queues import ai_queue

    block = readme_block("Flow control", "JOBS_RATE_LIMIT_AI=100/m")
    ids = ai_queue.enqueue_many("ai_echo", [{"text": str(i)} for i in range(3)])
    # the line as an environment file has it (systemd's EnvironmentFile, or `set -a` in a shell)
    worker = subprocess.Popen(["bash", "-c", f"set -a\n{block.code}set +a\n"
                               "exec .venv/bin/python scripts/rq_worker.py ai --worker-class simple"],
                              cwd=ROOT, env=shell_env(jobs_env.url), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        starts = sorted(ran_in_redis(i).started_at for i in ids)
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.6 - 0.02  # 100/min: one every 0.6 s


def test_pause_and_resume_from_the_cli_and_http(gunicorn, api_env):
    from core.api.queues import email_queue

    pause, resume, curl = commands(at_port(readme_block("Flow control", "scripts.jobs queue pause email").code,
                                           gunicorn))
    env = curl_env(api_env)
    ok(bash(pause, env))
    assert email_queue.paused
    ok(bash(resume, env))
    assert not email_queue.paused
    answer = json.loads(ok(bash(curl, env)))
    assert answer["data"] == {"queue": "email", "paused": True, "changed": True} and email_queue.paused


# "HTTP API" --------------------------------------------------------------------------------------------
def test_a_user_token_and_the_recent_jobs(gunicorn, api_env):
    from core.api.queues import email_queue

    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2}, user_id="42")
    other = email_queue.enqueue_job("add", {"a": 1, "b": 3}, user_id="7")
    block = readme_block("HTTP API", "curl -s -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:5000/api/jobs/user/42/recent")
    answer = json.loads(ok(bash(at_port(block.code, gunicorn), curl_env(api_env))))
    assert answer["success"] and answer["data"]["user_id"] == "42"
    assert [j["job_id"] for j in answer["data"]["jobs"]] == [job_id] and other != job_id


# "Live events and webhooks" --------------------------------------------------------------------------
def test_listen_events_follows_a_job_to_its_end(jobs_env, start_worker, capsys):
    start_worker("email")
    namespace = run_python(readme_block("Live events and webhooks", "for event in listen_events(job_id=job_id, timeout=60):"))
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[1:] for line in printed][0] == ["enqueued", "pending"]
    assert printed[-1].split()[1:] == ["completed", "completed"]
    job = ran_in_redis(namespace["job_id"])
    assert job.result["transport"] == "outbox"


def test_the_event_streams_with_curl(gunicorn, api_env, start_worker):
    from core.api.queues import crm_queue, email_queue
    from core.platform.auth import issue_user_token

    start_worker("email", "crm")
    job_id = email_queue.enqueue_job("add", {"a": 2, "b": 2}, user_id="42")
    ran_in_redis(job_id)
    env = curl_env(api_env, JOB=job_id, TOKEN=issue_user_token("42"))
    block = readme_block("Live events and webhooks", "curl -N -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:5000/api/jobs/$JOB/events")
    first, resume, admin = commands(at_port(block.code, gunicorn))

    stream = ok(bash(first, env))
    assert stream.startswith("retry: 3000\n")
    events = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: ")]
    assert [e["event"] for e in events] == ["enqueued", "started", "completed"]
    started = events[1]["id"]
    resumed = ok(bash(substitute(resume, {"1764620000412-0": started}), env))  # the id it received
    assert [json.loads(line[6:])["event"] for line in resumed.splitlines() if line.startswith("data: ")] == ["completed"]

    done = threading.Event()

    def keep_enqueueing() -> None:  # events must happen while the admin's stream is open
        while not done.is_set():
            crm_queue.enqueue_job("crm_echo", {"text": "x"})
            email_queue.enqueue_job("add", {"a": 0, "b": 0})
            time.sleep(0.2)

    feeder = threading.Thread(target=keep_enqueueing, daemon=True)
    feeder.start()
    try:
        live = ok(bash(admin, env))
    finally:
        done.set()
        feeder.join()
    queues = {json.loads(line[6:])["queue"] for line in live.splitlines() if line.startswith("data: ")}
    assert queues == {"crm"}


def test_webhooks_from_python(jobs_env, capsys):
    from core.events.webhooks import list_webhooks

    namespace = run_python(readme_block("Live events and webhooks", "hook = register_webhook("))
    hook = namespace["hook"]
    assert capsys.readouterr().out.split() == [hook["id"], hook["secret"]] and len(hook["secret"]) >= 32
    assert hook["tasks"] == ["upsert_contact"] and hook["events"] == ["completed", "failed"]
    assert list_webhooks() == []  # the block removes it at the end


def test_webhooks_from_curl_and_the_cli(gunicorn, api_env):
    from core.events.webhooks import list_webhooks

    block = readme_block("Live events and webhooks", "http://127.0.0.1:5000/api/jobs/webhooks")
    add, attempts, cli_add, cli_list = commands(at_port(block.code, gunicorn))
    env = curl_env(api_env)
    created = json.loads(ok(bash(add, env)))["data"]
    assert created["url"] == "https://crm.example.com/hooks/fikiri" and created["secret"]
    answer = json.loads(ok(bash(substitute(attempts, {"<id>": created["id"]}), env)))
    assert answer["success"] and answer["data"]["attempts"] == []
    ok(bash(cli_add, env))
    listed = ok(bash(cli_list, env))
    hooks = list_webhooks()
    assert len(hooks) == 2 and all(h["id"] in listed for h in hooks)
    assert sorted(h["tasks"] or [] for h in hooks) == [[], ["upsert_contact"]]


def test_the_signature_check_accepts_a_signed_body_and_refuses_the_rest():
    from core.events.webhooks import sign

    verify = run_python(readme_block("Live events and webhooks", "def verify(secret: str, body: bytes, header: str"))[
        "verify"]
    now = int(time.time())
    body = b'{"event": "completed"}'
    assert verify("s3cret", body, sign("s3cret", body, now))
    assert not verify("s3cret", body + b" ", sign("s3cret", body, now))
    assert not verify("other", body, sign("s3cret", body, now))
    assert not verify("s3cret", body, sign("s3cret", body, now - 301))
    assert not verify("s3cret", body, "garbage")


# "The worker" ------------------------------------------------------------------------------------------
def test_the_worker_command_lines(jobs_env, tmp_path, monkeypatch, registry_restored):
    import signal

    from core.api.queues import ai_queue, crm_queue, email_queue
    from tests.servers import wait_until

    every, two, options, burst = commands(readme_block("The worker", ".venv/bin/python scripts/rq_worker.py --burst").code)
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(
        "from core.api.queues import email_queue\n\n\n@email_queue.task()\n"
        "def greet(name: str) -> str:\n    return f'hello {name}'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import myapp.tasks  # noqa: F401  (the web process imports your task module too)

    env = shell_env(jobs_env.url, PYTHONPATH=f"{ROOT}:{tmp_path}")

    def serve(command: str, jobs: list[str], processes: int = 1) -> None:
        log_path = tmp_path / f"worker-{command.split('#')[0].strip()[-12:].replace(' ', '_')}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for job_id in jobs:
                ran_in_redis(job_id)
            # every worker process is up (an operator stops a started service, not one half-way up)
            wait_until(lambda: log_path.read_text().count(") serving ") == processes, timeout=60,
                       message=f"{processes} worker process(es) serving")
        finally:
            proc.send_signal(signal.SIGTERM)  # systemd's stop (KillMode=mixed): warm, exits 0
            code = proc.wait(timeout=60)
            log.close()
        assert code == 0, log_path.read_text()[-3000:]

    serve(every, [email_queue.enqueue_job("add", {"a": 1, "b": 1}), ai_queue.enqueue_job("ai_echo", {"text": "a"}),
                  crm_queue.enqueue_job("crm_echo", {"text": "c"})])
    crm_waiting = crm_queue.enqueue_job("crm_echo", {"text": "not served"})
    serve(two, [email_queue.enqueue_job("add", {"a": 2, "b": 2}), ai_queue.enqueue_job("ai_echo", {"text": "b"})])
    assert finished_or_none(crm_waiting) is None  # "email ai" leaves crm alone
    serve(options, [email_queue.enqueue_job("greet", {"name": "Ada"})], processes=2)  # --import myapp.tasks
    burst_ids = [email_queue.enqueue_job("add", {"a": 20, "b": 22}), ai_queue.enqueue_job("ai_echo", {"text": "z"})]
    ok(bash(burst, env, timeout=120))  # returns: the queues are empty
    assert [ran_in_redis(i).result for i in burst_ids] == [42, "z"]
    assert ran_in_redis(crm_waiting).result == "not served"


def finished_or_none(job_id: str):
    from core.api.jobs import get_job

    job = get_job(job_id)
    return job if job and job.status.is_final else None


# "Domain tasks" and the operator CLI ------------------------------------------------------------------
def seed_threads(user: str) -> None:
    from core.platform.db import session_scope
    from email_automation.models import EmailMessage

    mail = [("18c2f0a1b2", "Ada Lovelace <ada@example.com>", "Invoice 42",
             "The invoice is overdue. Please send a corrected invoice by Friday."),
            ("18c2f0a1b2", "Ada Lovelace <ada@example.com>", "Re: Invoice 42", "Could you also confirm the refund?"),
            ("9d0e1f2a3b", "Bob <bob@example.com>", "Lunch", "Shall we meet on Tuesday?")]
    with session_scope() as session:
        session.add_all([EmailMessage(user_id=user, gmail_id=f"m{i}", thread_id=thread, sender=sender, subject=subject,
                                      snippet=body, internal_date=1_700_000_000.0 + i)
                         for i, (thread, sender, subject, body) in enumerate(mail)])


def test_thread_ai_jobs_from_python(jobs_env, start_worker):
    from ai_assistant.thread_jobs import thread_job_id
    from core.platform.db import session_scope
    from email_automation.models import EmailThread
    from tests.servers import wait_until

    seed_threads("42")
    start_worker("ai")
    namespace = run_python(readme_block("Domain tasks", 'job_id = queue_thread_ai("18c2f0a1b2", user_id="42"'))
    assert namespace["job_id"] == thread_job_id("42", "18c2f0a1b2")
    assert ran_in_redis(namespace["job_id"]).result["engine"] == "local"

    def bulk_ended():
        ended = [get_job_str(i) for i in jobs_env.client().zrange("rq:finished:fikiri:ai", 0, -1)]
        return [j for j in ended if j.task_name == "process_unprocessed_threads"]

    bulk = wait_until(bulk_ended, timeout=60, message="the bulk job")
    assert len(bulk) == 1 and bulk[0].mode == "redis" and bulk[0].payload == {"user_id": "42", "limit": 20}
    threads = [ran_in_redis(i) for i in bulk[0].result["job_ids"]]
    assert {t.payload["thread_id"] for t in threads} >= {"9d0e1f2a3b"}
    with session_scope() as session:
        rows = {r.thread_id: r for r in session.query(EmailThread).filter_by(user_id="42")}
        assert rows["18c2f0a1b2"].summary and rows["9d0e1f2a3b"].summary


def get_job_str(raw: bytes):
    from core.api.jobs import get_job

    return get_job(raw.decode())


def test_the_operator_cli_lines(jobs_env, start_worker):
    from core.api.jobs import get_job
    from core.api.queues import email_queue

    seed_threads("42")
    failed = email_queue.enqueue_job("always_fail", {"message": "boom"})
    ok(bash(".venv/bin/python scripts/rq_worker.py email --worker-class simple --burst", shell_env(jobs_env.url)))
    assert get_job(failed).status.value == "failed"
    delayed = email_queue.enqueue_job("add", {"a": 1, "b": 2}, delay=3600)
    env = shell_env(jobs_env.url)
    outputs: dict[str, str] = {}
    sent = None
    for command in commands(readme_block("Periodic jobs, metrics and the operator CLI",
                                         ".venv/bin/python -m scripts.jobs enqueue email send_email").code):
        if "<job_id>" in command or "<id>" in command:
            target = failed if " retry " in command else delayed if " cancel " in command else sent
            command = substitute(command, {"<job_id>" if "<job_id>" in command else "<id>": target})
        out = ok(bash(command, env))
        outputs[command.split("#")[0].strip()] = out
        if " enqueue " in command:
            sent = out.strip()
    prefix = ".venv/bin/python -m scripts.jobs "
    assert sent and sent in outputs[f"{prefix}status {sent}"]
    assert sent in outputs[f"{prefix}recent --user 42 --limit 10"]
    audit = outputs[f"{prefix}audit --limit 20"]
    assert failed in audit and delayed in audit  # the retry and the cancel, recorded
    assert get_job(failed).status.value in ("pending", "retrying")  # retried: queued again
    assert get_job(delayed).status.value == "canceled"
    stats = json.loads(outputs[f"{prefix}--json stats"])
    assert [q["queue"] for q in stats] == ["email", "ai", "crm"] and stats[0]["pending_jobs"] >= 2, stats
    # what the lines queued, run by a worker: the mail, the sync (no Gmail account: fails with the
    # reason), the thread jobs
    start_worker("email", "ai")
    assert ran_in_redis(sent).result["transport"] == "outbox"
    sync_id = outputs[f"{prefix}sync user 42 --lookback-days 7"].split()[-1]
    sync = ran_in_redis(sync_id, status="failed")
    assert "no connected Gmail account" in sync.error


# "Schedules your app owns" ---------------------------------------------------------------------------
def test_schedules_from_python(jobs_env, capsys):
    from core.schedule.periodic import list_periodic

    run_python(readme_block("Schedules your app owns", 'register_periodic("morning-report", "send_email"'))
    printed = capsys.readouterr().out
    assert "('morning-report', 'host'" in printed and "('hourly-ping', 'host'" in printed
    names = {s["name"] for s in list_periodic()}
    assert "morning-report" in names and "hourly-ping" not in names  # the last line removed it


def test_schedules_from_the_cli(jobs_env):
    from core.schedule.periodic import list_periodic

    add_morning, add_ping, listing, remove = commands(
        readme_block("Schedules your app owns", "scripts.jobs schedules add morning-report send_email").code)
    env = shell_env(jobs_env.url)
    ok(bash(add_morning, env))
    ok(bash(add_ping, env))
    listed = ok(bash(listing, env))
    assert "morning-report" in listed and "hourly-ping" in listed and "host" in listed
    ok(bash(remove, env))
    schedules = {s["name"]: s for s in list_periodic()}
    assert "hourly-ping" not in schedules and schedules["morning-report"]["tz"] == "Africa/Nairobi"


def test_schedules_over_http(gunicorn, api_env):
    create, listing, one, delete = commands(at_port(
        readme_block("Schedules your app owns", "curl -s -X POST http://127.0.0.1:5000/api/jobs/schedules").code,
        gunicorn))
    env = curl_env(api_env)
    created = json.loads(ok(bash(create, env)))
    assert created["success"] and created["data"]["name"] == "morning-report"
    again = subprocess.run(["bash", "-c", create.split("#")[0] + " -o /dev/null -w '%{http_code}'"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout == "200"  # it existed
    assert "morning-report" in ok(bash(listing, env))
    assert json.loads(ok(bash(one, env)))["data"]["tz"] == "Africa/Nairobi"
    ok(bash(delete, env))
    gone = json.loads(ok(bash(one, env)))
    assert gone["success"] is False and gone["error"]["code"] == "not_found"

