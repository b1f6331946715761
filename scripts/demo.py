"""The main job on one machine: find or start Redis, start the worker (and the API and scheduler
when present), push jobs through every queue and show them move.

    bash scripts/run_demo.sh            # keeps the services up until Ctrl-C
    bash scripts/run_demo.sh --once     # exits when the demo jobs have finished

Redis: ``REDIS_URL`` if set, else a private ``redis-server`` this script starts on a free port
and removes on exit (the shared 127.0.0.1:6379 is left alone: another app's workers on the same
queue names would refuse the demo's tasks), else it says plainly that jobs run in the
in-process fallback.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

logger = logging.getLogger("fikiri.demo")
STOP_GRACE = 20.0  # s: the services get this long, together, to stop after Ctrl-C; then they are killed

DEMO_TASK_MODULE = "scripts.demo_tasks"


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.3, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Services:
    """Processes the demo started; all stopped (by PID) on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="fikiri-demo-"))

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(args, env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def log_path(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE  # one bound for all: they stop side by side
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing PID %s", name, proc.pid)
                proc.kill()
                proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def find_redis(services: Services) -> str | None:
    """REDIS_URL, else a private redis-server we start; None means fallback mode."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        if _ping(configured):
            print(f"Redis: using REDIS_URL {configured}")
            return configured
        print(f"Redis: REDIS_URL {configured} does not answer")
    binary = shutil.which("redis-server")
    if binary:
        port = _free_port()
        services.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(services.tmp)], dict(os.environ))
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _ping(url):
            time.sleep(0.1)
        if _ping(url):
            print(f"Redis: started a private redis-server at {url} (removed on exit; set REDIS_URL to use yours)")
            return url
    print("Redis: none reachable and none could be started -> FALLBACK MODE: jobs run in this process's threads")
    return None


def leave_nothing_behind(redis_url: str, prefix: str) -> int:
    """Delete every key the demo made in a Redis that is not its own; returns how many.

    The demo ran under its own queue prefix, so its keys are the prefix's own keys, RQ's keys of
    the prefix's queues, and the job hashes those queues' lists and registries name. (A SCAN is
    fine here: this runs once, at the end of a demo, never on a request path.)"""
    import redis

    from core.platform import keys

    client = redis.Redis.from_url(redis_url)
    queues = [f"{prefix}:{q}" for q in ("email", "ai", "crm")]
    registries = [kind(q) for q in queues for kind in (keys.started, keys.scheduled, keys.finished, keys.failed,
                                                          keys.canceled)]
    job_ids = {m.decode().split(":")[0] for key in registries for m in client.zrange(key, 0, -1)}
    job_ids |= {m.decode() for q in queues for m in client.lrange(keys.queue(q), 0, -1)}
    workers = {keys.worker_name(m) for q in queues for m in client.smembers(keys.queue_workers(q))}
    names = {k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)}  # the prefix's own keys
    names |= {keys.job(i) for i in job_ids} | {keys.results(i) for i in job_ids}
    names |= {keys.worker(w) for w in workers} | set(registries)
    names |= {keys.queue(q) for q in queues} | {keys.queue_workers(q) for q in queues}
    removed = client.delete(*names) if names else 0
    client.srem(keys.all_queues(), *[keys.queue(q) for q in queues])
    if workers:
        client.srem(keys.workers(), *workers, *(keys.worker(w) for w in workers))
    client.close()
    return int(removed)


def service_env(redis_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    modules = [m for m in env.get("JOBS_TASK_MODULES", "").split(",") if m]
    env["JOBS_TASK_MODULES"] = ",".join([*modules, DEMO_TASK_MODULE])
    env.setdefault("JOBS_RETRY_BACKOFF_BASE", "1")
    env.setdefault("JOBS_ADMIN_TOKEN", secrets.token_urlsafe(24))
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there: the fallback takes over
    return env


def start_demo_gmail(env: dict[str, str]) -> object | None:
    """Without a real Gmail configured, serve the fake Gmail API on loopback (labelled DEMO)."""
    if os.environ.get("GMAIL_API_BASE_URL"):
        print(f"Gmail: using {os.environ['GMAIL_API_BASE_URL']}")
        return None
    from email_automation.fake_gmail import FakeGmail

    fake = FakeGmail.start(messages=30)
    for target in (env, os.environ):
        target["GMAIL_API_BASE_URL"] = fake.base_url
        target["GMAIL_TOKEN_URL"] = fake.token_url
    print(f"Gmail: no real account configured -> DEMO fake Gmail API at {fake.base_url} (30 messages)")
    return fake


def enqueue_domain_jobs() -> list[tuple[str, str]]:
    """A Gmail sync for the demo user (connected to the fake or real Gmail), and mail to the outbox."""
    from core.api.queues import email_queue
    from email_automation.gmail_sync_jobs import GmailSyncJobManager, connect_account

    if os.environ["GMAIL_API_BASE_URL"].startswith("http://127.0.0.1"):
        connect_account("demo", "demo@example.com", "demo-access-token", "demo-refresh-token")
    return [
        ("email: Gmail sync (full)", GmailSyncJobManager().queue_sync_job("demo", "full")),
        ("email: digest to outbox", email_queue.enqueue_job(
            "send_email", {"to": "ops@example.com", "subject": "Demo digest", "body": "Jobs are flowing."},
            user_id="demo")),
    ]


def classify_synced_mail() -> list[tuple[str, str]]:
    from core.api.queues import ai_queue

    return [("ai: classify unprocessed mail", ai_queue.enqueue_job("process_unclassified", {"limit": 10},
                                                                    user_id="demo"))]


def show_classifications() -> None:
    from sqlalchemy import func, select

    from core.platform.db import session_scope
    from email_automation.models import EmailMessage

    with session_scope() as session:
        rows = session.execute(select(EmailMessage.classification, func.count()).where(EmailMessage.user_id == "demo")
                               .group_by(EmailMessage.classification)).all()
    print("Stored messages of user 'demo' by classification: "
          + ", ".join(f"{label or 'unclassified'}={count}" for label, count in rows))


def enqueue_demo_jobs() -> list[tuple[str, str]]:
    """A few jobs on each queue; returns (label, job_id) pairs."""
    from core.api.queues import (
        ai_queue,
        crm_queue,
        email_queue,
        process_ai_request_async,
        send_email_async,
        upsert_crm_contact_async,
    )
    from core.config import get_settings

    run = uuid.uuid4().hex[:8]  # under the queue prefix: a demo on a shared Redis removes it at the end
    jobs = [
        ("email: send welcome email", send_email_async("new.user@example.com", "Welcome", "Hello!", user_id="demo")),
        ("email: slow report (progress)", email_queue.enqueue_job("demo_slow_report", {"steps": 5}, user_id="demo")),
        ("email: delayed 3 s", email_queue.enqueue_job("send_email", {"to": "later@example.com", "subject": "Later",
                                                                       "body": "sent 3 s later"}, delay=3, user_id="demo")),
        ("ai: answer a prompt", process_ai_request_async("Summarise my inbox", user_id="demo")),
        ("ai: flaky call (fails, retries)", ai_queue.enqueue_job("demo_flaky_llm_call", {"run_key": f"{get_settings().queue_prefix}:demo-flaky:{run}"},
                                                                  user_id="demo")),
        ("crm: upsert contact", upsert_crm_contact_async("ext-42", "lead@example.com", "Ada Lead", user_id="demo")),
        ("crm: invalid contact (fails)", crm_queue.enqueue_job("demo_invalid_contact", {"email": "not-an-email"},
                                                               user_id="demo")),
    ]
    return jobs


def watch(jobs: list[tuple[str, str]], timeout: float = 60.0) -> bool:
    """Print each job's status whenever it changes, until all are final. True if all ended."""
    from core.api.jobs import get_job

    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        all_final = True
        for label, job_id in jobs:
            job = get_job(job_id)
            status = job.status.value if job else "expired"
            detail = ""
            if job is not None:
                if job.progress:
                    detail = f" progress={job.progress}"
                if job.retry_count:
                    detail += f" retries={job.retry_count}"
                if job.status.value == "completed":
                    detail += f" result={job.result}"
                if job.error:
                    detail += f" error={job.error.strip().splitlines()[-1][:90]!r}"
                all_final = all_final and job.status.is_final
            line = f"  [{status:9}] {label:34} {job_id[:8]} {job.mode if job else ''}{detail}"
            if seen.get(job_id) != line:
                seen[job_id] = line
                print(f"{time.strftime('%H:%M:%S')} {line}")
        if all_final:
            return True
        time.sleep(0.25)
    return False


def show_schedule() -> None:
    """The periodic jobs the scheduler registered (waits briefly for its first pass)."""
    from core.schedule.periodic import list_periodic_jobs

    deadline = time.monotonic() + 15
    entries = list_periodic_jobs()
    while time.monotonic() < deadline and not all(e["registered"] for e in entries):
        time.sleep(0.3)
        entries = list_periodic_jobs()
    print("\nPeriodic jobs (rq-scheduler):")
    for e in entries:
        next_run = time.strftime("%H:%M:%S", time.gmtime(e["next_run"])) + " UTC" if e["next_run"] else "-"
        print(f"  {e['id']:26} {e['task']:22} {e['trigger']:22} next {next_run}")


def start_api(services: Services, env: dict[str, str]) -> str | None:
    """gunicorn serving app:create_app() on DEMO_API_PORT (default 5000, or a free port)."""
    port = int(os.environ.get("DEMO_API_PORT", "5000"))
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            port = _free_port()
    base = f"http://127.0.0.1:{port}"
    services.start("api", [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                           "--threads", "4", "app:create_app()"], env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/api/jobs/health", timeout=1).ok:
                print(f"API: gunicorn at {base} (log: {services.log_path('api')})")
                return base
        except requests.RequestException:
            time.sleep(0.2)
    print(f"API: did not start; see {services.log_path('api')}")
    return None


def show_api(base: str, env: dict[str, str], jobs: list[tuple[str, str]], once: bool = False) -> None:
    """Prove the API answers, and print curl lines a newcomer can copy (while it keeps running)."""
    from core.platform.auth import issue_user_token

    admin = env["JOBS_ADMIN_TOKEN"]
    job_id = jobs[0][1]
    answer = requests.get(f"{base}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {admin}"}, timeout=5)
    print(f"\nGET /api/jobs/{job_id} -> {answer.status_code} status={answer.json()['data']['status']}")
    if once:
        print("\n(--once: the services stop now; run without --once to try the API, the tokens and the dashboard)")
        return
    print("\nTry the API (admin token, then a user token for user 'demo'):")
    print(f"  curl -s -H 'Authorization: Bearer {admin}' {base}/api/jobs/{job_id}")
    print(f"  curl -s -H 'Authorization: Bearer {admin}' {base}/api/jobs/queues/stats")
    user_token = issue_user_token("demo")
    print(f"  curl -s -H 'Authorization: Bearer {user_token}' {base}/api/jobs/user/demo/recent")
    print(f"\nUser token for user 'demo' (signed with this run's SECRET_KEY): {user_token}")
    print(f"\nDashboard: {base}/dashboard/  (log in with the admin token {admin})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="exit when the demo jobs are done")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the demo jobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    services = Services()
    fake_gmail = None
    shared, shared_prefix = False, ""
    try:
        redis_url = find_redis(services)
        env = service_env(redis_url)
        shared = redis_url is not None and redis_url == os.environ.get("REDIS_URL")
        if shared:  # the user's Redis: our own queue names, and everything removed at the end
            shared_prefix = env["JOBS_QUEUE_PREFIX"] = f"fikiri-demo-{secrets.token_hex(3)}"
        os.environ.update({k: env[k] for k in ("REDIS_URL", "JOBS_TASK_MODULES", "JOBS_RETRY_BACKOFF_BASE",
                                               "JOBS_ADMIN_TOKEN", "SECRET_KEY", "JOBS_QUEUE_PREFIX") if k in env})
        os.environ.setdefault("DATABASE_URL", env.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'demo.db'}"))
        fake_gmail = start_demo_gmail(env)
        if redis_url:
            services.start("worker", [sys.executable, "scripts/rq_worker.py"], env)
            print(f"Worker: started (log: {services.log_path('worker')})")
            if shared:
                print("Scheduler: not started on your Redis (its schedule is shared by every app there)")
            else:
                services.start("scheduler", [sys.executable, "scripts/periodic_scheduler.py"], env)
                print(f"Scheduler: started (log: {services.log_path('scheduler')})")
        api_base = start_api(services, env)

        print("\nEnqueueing demo jobs on the email, ai and crm queues...\n")
        jobs = enqueue_demo_jobs() + enqueue_domain_jobs()
        finished = watch(jobs, timeout=args.timeout)
        if finished:
            print("\nClassifying the synced mail with the local AI engine...\n")
            follow_up = classify_synced_mail()
            finished = watch(follow_up, timeout=args.timeout)
            time.sleep(1.5)  # the classify_email jobs it queued
            show_classifications()
        print("\nAll demo jobs have finished." if finished else "\nSome demo jobs did not finish in time.")
        if redis_url and not shared:
            show_schedule()
        if api_base:
            show_api(api_base, env, jobs, once=args.once)
        if args.once:
            return 0 if finished else 1
        print("Services keep running; press Ctrl-C to stop.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
    finally:
        services.stop_all()
        if fake_gmail is not None:
            fake_gmail.stop()
        if shared:
            print(f"Redis: removed the demo's {leave_nothing_behind(redis_url, shared_prefix)} keys from {redis_url}")


if __name__ == "__main__":
    sys.exit(main())
