"""Failed jobs in bulk (issue 24, item 4): filter, page, retry, delete and export failed jobs over
HTTP, the CLI and the dashboard, against a real Redis (failures made by a real worker process and
by the lifecycle's own fail script), with one audit entry per real bulk action."""

from __future__ import annotations

import html
import json
import re
import time
from datetime import UTC, datetime

import pytest

from core.api.dead_letters import FailedFilter, list_failed, retry_failed, scan_failed
from core.api.jobs import get_job
from core.api.queues import ai_queue, crm_queue, email_queue
from core.errors import InvalidFilterError
from core.ops import audit
from core.platform.auth import issue_user_token
from tests.conftest import ADMIN_TOKEN
from tests.servers import wait_until
from tests.test_dashboard_pages import csrf, login
from tests.test_ops_cli import cli

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def fail_by_hand(queue, task: str, payload: dict, error: str, user: str | None = None) -> str:
    """A job that ends failed through the lifecycle's fail script (no attempt needed)."""
    job_id = queue.enqueue_job(task, payload, user_id=user)
    assert queue.fail_job(job_id, error, retry=False).status.value == "failed"
    return job_id


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@pytest.fixture
def failed_set(jobs_env):
    """Seven failed jobs on three queues; ``mid`` is the failure time of the last of the first three."""
    early = [fail_by_hand(email_queue, "always_fail", {"message": f"t{i}"}, "requests.Timeout: gmail slow", "7")
             for i in range(3)]
    mid = max(get_job(j).completed_at for j in early)
    time.sleep(0.01)  # the later failures carry a later ended_at (microseconds)
    late = [fail_by_hand(email_queue, "always_fail", {"message": f"v{i}"}, "ValueError: bad address", "8")
            for i in range(2)]
    late.append(fail_by_hand(ai_queue, "ai_echo", {"text": "x"}, "TimeoutError: llm", "7"))
    late.append(fail_by_hand(crm_queue, "crm_echo", {"text": "y"}, "boom"))
    return {"early": early, "late": late, "mid": mid}


def ids(response) -> list[str]:
    body = response.get_json()
    assert response.status_code == 200 and body["success"], body
    return [j["job_id"] for j in body["data"]["jobs"]]


def test_every_filter_over_http_newest_first_and_paged(client, failed_set):
    everything = client.get("/api/jobs/failed", headers=ADMIN)
    data = everything.get_json()["data"]
    assert data["total"] == 7 and data["complete"] is True
    assert ids(everything) == list(reversed(failed_set["early"] + failed_set["late"]))  # newest failure first
    assert all(j["status"] == "failed" for j in data["jobs"])

    def total(query: str) -> int:
        response = client.get(f"/api/jobs/failed?{query}", headers=ADMIN)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]["total"]

    assert total("queue=email") == 5 and total("queue=fikiri:crm") == 1
    assert total("task=always_fail&user_id=7") == 3 and total("user_id=7") == 4
    assert total("error=Timeout") == 4 and total("error=timeout") == 0  # a case-sensitive substring
    assert total("queue=ai&error=Timeout") == 1 and total("error=bad%20address&user_id=7") == 0
    assert total(f"until={iso(failed_set['mid'])}") == 3  # ISO 8601, inclusive
    assert total(f"since={failed_set['mid'] + 0.002:.4f}") == 4  # epoch seconds
    assert total(f"since={iso(failed_set['mid'] - 3600)}&until={int(failed_set['mid']) + 3600}&task=always_fail") == 5
    page = client.get("/api/jobs/failed?limit=2&page=2", headers=ADMIN)
    assert ids(page) == ids(everything)[2:4] and page.get_json()["data"]["pages"] == 4
    assert ids(client.get("/api/jobs/failed?limit=2&page=4", headers=ADMIN)) == ids(everything)[6:]


def test_the_failed_routes_are_admin_only_and_bad_filters_are_400s(client, failed_set):
    assert client.get("/api/jobs/failed").status_code == 401
    user = {"Authorization": f"Bearer {issue_user_token('7')}"}
    assert client.get("/api/jobs/failed", headers=user).status_code == 403
    assert client.post("/api/jobs/failed/delete", json={"dry_run": False}, headers=user).status_code == 403
    for query, words in [("queue=nope", ["'nope'", "email, ai, crm"]), ("since=yesterday", ["since", "ISO 8601"]),
                         ("until=2026-13-45", ["until", "'2026-13-45'"]), ("page=0", ["page", "from 1"]),
                         ("since=2026-12-02&until=2026-12-01", ["after until"]), ("task=a%20b", ["malformed task"])]:
        response = client.get(f"/api/jobs/failed?{query}", headers=ADMIN)
        body = response.get_json()
        assert response.status_code == 400 and all(w in body["error"]["message"] for w in words), (query, body)
    for payload, words in [({"queue": "email", "tsk": "x"}, ["'tsk'", "accepted: queue, task"]),
                           ({"dry_run": "yes"}, ["dry_run", "true or false"]), ({"user_id": ["7"]}, ["user_id"])]:
        response = client.post("/api/jobs/failed/delete", json=payload, headers=ADMIN)
        assert response.status_code == 400 and all(w in response.get_json()["error"]["message"] for w in words)
    assert client.post("/api/jobs/failed/retry", data="[1]", content_type="application/json",
                       headers=ADMIN).status_code == 400
    assert all(get_job(j).status.value == "failed" for j in failed_set["early"] + failed_set["late"])  # untouched


def test_dry_run_counts_and_the_real_run_acts_and_is_audited(client, failed_set):
    dry = client.post("/api/jobs/failed/retry", json={"task": "always_fail", "user_id": "7", "dry_run": True},
                      headers=ADMIN).get_json()["data"]
    assert (dry["matched"], dry["retried"], dry["dry_run"]) == (3, 0, True)
    assert all(get_job(j).status.value == "failed" for j in failed_set["early"])
    assert not [e for e in audit.recent(10) if e["action"].startswith("failed.")]  # a dry run writes none
    retried = client.post("/api/jobs/failed/retry", json={"task": "always_fail", "user_id": "7", "dry_run": False},
                          headers=ADMIN).get_json()["data"]
    assert (retried["matched"], retried["retried"]) == (3, 3)
    assert all(get_job(j).status.value in ("pending", "retrying") for j in failed_set["early"])
    gone = client.post("/api/jobs/failed/delete", json={"queue": "crm"}, headers=ADMIN).get_json()["data"]
    assert (gone["matched"], gone["deleted"]) == (1, 1) and get_job(failed_set["late"][-1]) is None
    entries = [e for e in audit.recent(10) if e["action"].startswith("failed.")]
    assert [(e["action"], e["who"], e["source"], e["detail"]) for e in entries] == [
        ("failed.delete", "admin", "api", "1 of 1 matched"), ("failed.retry", "admin", "api", "3 of 3 matched")]
    assert entries[0]["target"] == "queue=crm" and entries[1]["target"] == "task=always_fail user_id=7"
    assert client.get("/api/jobs/failed", headers=ADMIN).get_json()["data"]["total"] == 3
    # GET /api/jobs/<job_id> still answers for job ids; "failed" is the list
    assert client.get(f"/api/jobs/{failed_set['late'][0]}", headers=ADMIN).get_json()["data"]["status"] == "failed"


def test_a_bounded_scan_says_it_is_incomplete(jobs_env, failed_set, setting):
    setting("JOBS_FAILED_SCAN_MAX", "3")
    found = list_failed(FailedFilter.parse({"queue": "email"}), 1, 20)
    assert (found.total, found.scanned, found.complete) == (3, 3, False)  # the newest 3 of email's 5
    assert [j.job_id for j in found.jobs] == list(reversed(failed_set["late"][:2])) + [failed_set["early"][-1]]
    with pytest.raises(InvalidFilterError, match="unknown filter 'state'"):
        FailedFilter.parse({"state": "failed"})


def test_bulk_retry_runs_the_jobs_again_in_a_worker_and_the_cli(jobs_env, start_worker, tmp_path):
    """Failures made by a real worker; the CLI lists, dry-runs, retries, deletes and exports them."""
    flaky = [email_queue.enqueue_job("fail_times", {"key": f"test:dl{i}", "times": 1}, max_retries=0,
                                     user_id="5" if i < 2 else "6") for i in range(4)]
    broken = email_queue.enqueue_job("always_fail", {"message": "no such mailbox"}, user_id="5")
    worker = start_worker("email", "--worker-class", "simple")
    for job_id in [*flaky, broken]:
        wait_until(lambda j=job_id: get_job(j).status.value == "failed", timeout=30)
    assert retry_failed(FailedFilter.parse({"task": "fail_times", "user_id": "5"}), dry_run=True)["matched"] == 2
    outcome = retry_failed(FailedFilter.parse({"task": "fail_times", "user_id": "5"}))
    assert (outcome["matched"], outcome["retried"]) == (2, 2)
    for job_id in flaky[:2]:  # the second attempt succeeds (fail_times fails once per key)
        done = wait_until(lambda j=job_id: (job := get_job(j)).status.is_final and job, timeout=30)
        assert (done.status.value, done.mode) == ("completed", "redis")
    worker.stop()
    listed = json.loads(cli(jobs_env.url, "--json", "failed", "--user", "6").stdout)
    assert listed["total"] == 2 and {j["job_id"] for j in listed["jobs"]} == set(flaky[2:])
    legacy = json.loads(cli(jobs_env.url, "--json", "failed", "email").stdout)  # `failed QUEUE`, as before
    assert sorted(j["job_id"] for j in legacy) == sorted([*flaky[2:], broken])
    table = cli(jobs_env.url, "failed", "email", "--error", "mailbox")
    assert table.returncode == 0 and broken in table.stdout and "1 matching" in table.stdout
    dry = cli(jobs_env.url, "failed", "retry", "--user", "6", "--dry-run")
    assert dry.returncode == 0 and "2 failed job(s) match user_id=6; dry run: nothing retried" in dry.stdout
    export = tmp_path / "failed.jsonl"
    written = cli(jobs_env.url, "failed", "export", "--queue", "email", "-o", str(export))
    assert written.returncode == 0 and f"wrote 3 failed job(s) to {export}" in written.stderr
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert sorted(r["job_id"] for r in rows) == sorted([*flaky[2:], broken])
    assert {r["status"] for r in rows} == {"failed"} and all(r["error"] for r in rows)
    stdout = cli(jobs_env.url, "failed", "export", "--task", "always_fail").stdout
    assert [json.loads(line)["job_id"] for line in stdout.splitlines()] == [broken]
    deleted = cli(jobs_env.url, "--json", "failed", "delete", "--task", "fail_times")
    assert json.loads(deleted.stdout)["deleted"] == 2 and all(get_job(j) is None for j in flaky[2:])
    misplaced = cli(jobs_env.url, "failed", "--task", "always_fail", "delete")  # would otherwise match every job
    assert misplaced.returncode == 2 and "put the filters after the subcommand: failed delete --task" in misplaced.stderr
    assert get_job(broken).status.value == "failed"
    bad = cli(jobs_env.url, "failed", "delete", "--since", "last week")
    assert bad.returncode == 2 and "since must be an ISO 8601 time" in bad.stderr
    entry = audit.recent(1)[0]
    assert (entry["action"], entry["source"], entry["detail"]) == ("failed.delete", "cli", "2 of 2 matched")
    assert get_job(broken).status.value == "failed"


def test_a_job_retried_meanwhile_is_not_deleted(jobs_env, failed_set):
    """The delete script skips a job that left the failed state after the scan."""
    from core.api.jobs import retry_job
    from core.platform.connection import get_redis
    from core.queue import lifecycle

    [(_, job_id, _queue)] = scan_failed(FailedFilter.parse({"queue": "ai"})).found
    retry_job(job_id)  # after the scan, before the delete
    assert lifecycle.delete_failed_many(get_redis(), [job_id], "fikiri:ai") == 0
    assert get_job(job_id).status.value == "retrying"  # requeued by hand, not deleted
    assert lifecycle.delete_failed_many(get_redis(), [failed_set["late"][-1]], "fikiri:crm") == 1


def test_the_dashboard_filters_and_acts_behind_csrf_and_confirm(client, failed_set):
    login(client)
    page = client.get("/dashboard/failures?task=always_fail&user_id=7")
    text = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 200 and "3 failed job(s) match task=always_fail user_id=7" in text
    assert all(j[:18] in text for j in failed_set["early"]) and failed_set["late"][0][:18] not in text
    forms = re.findall(r'<form method="post" action="/dashboard/failures/(retry|delete)" data-confirm="([^"]+)"', text)
    assert [f[0] for f in forms] == ["retry", "delete"] and "3 failed job(s) matching" in forms[0][1]
    bad = client.get("/dashboard/failures?since=soon")
    assert bad.status_code == 400 and "since must be an ISO 8601 time" in html.unescape(bad.get_data(as_text=True))
    form = {"task": "always_fail", "user_id": "7"}
    assert client.post("/dashboard/failures/delete", data=form).status_code == 400  # no CSRF token
    assert client.post("/dashboard/failures/delete", data={**form, "csrf_token": "nope"}).status_code == 400
    assert all(get_job(j) is not None for j in failed_set["early"])
    done = client.post("/dashboard/failures/delete", data={**form, "csrf_token": csrf(client)})
    assert done.status_code == 302 and "task=always_fail" in done.headers["Location"]
    assert all(get_job(j) is None for j in failed_set["early"])
    after = html.unescape(client.get(done.headers["Location"]).get_data(as_text=True))
    assert "deleted 3 of 3 failed job(s) matching task=always_fail user_id=7" in after
    entry = audit.recent(1)[0]
    assert (entry["action"], entry["source"], entry["detail"]) == ("failed.delete", "dashboard", "3 of 3 matched")
    retried = client.post("/dashboard/failures/retry", data={"queue": "ai", "csrf_token": csrf(client)})
    assert retried.status_code == 302 and get_job(failed_set["late"][2]).status.value == "retrying"


def test_failed_retention_per_queue(jobs_env, setting):
    setting("JOBS_FAILURE_TTL", "5000")
    setting("JOBS_FAILURE_TTL_CRM", "600")
    on_crm = fail_by_hand(crm_queue, "crm_echo", {"text": "z"}, "boom")
    on_email = fail_by_hand(email_queue, "always_fail", {"message": "m"}, "boom")
    connection = jobs_env.client()
    assert 590 <= connection.ttl(f"rq:job:{on_crm}") <= 600
    assert 4990 <= connection.ttl(f"rq:job:{on_email}") <= 5000


# --- the README's "Failed jobs in bulk" and "Domain retention" blocks, run as written --------------------
@pytest.fixture
def outage(jobs_env):
    """What the README's examples find: three email jobs that failed on a timeout, and one of user 42's."""
    timeouts = [fail_by_hand(email_queue, "send_email", {"to": f"u{i}@example.com", "subject": "s", "body": "b"},
                             "smtplib.SMTPServerDisconnected: Timeout", str(i)) for i in range(3)]
    bad = fail_by_hand(email_queue, "send_email", {"to": "nobody", "subject": "s", "body": "b"},
                       "ValueError: bad address", "42")
    return timeouts, bad


def test_the_readme_python_example(outage, capsys):
    from tests.readme_blocks import readme_block
    from tests.test_readme_blocks import run_python

    timeouts, bad = outage
    run_python(readme_block("Failed jobs in bulk", "page = list_failed(outage, page=1, limit=20)"))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"3 {list(reversed(timeouts))}"
    assert printed[1].startswith("{'matched': 3, 'retried': 0, 'dry_run': True,")
    assert printed[2].startswith("{'matched': 3, 'retried': 3,")
    assert printed[3].startswith("{'matched': 1, 'deleted': 1,") and get_job(bad) is None
    assert all(get_job(j).status.value == "retrying" for j in timeouts)


def test_the_readme_cli_lines(outage, tmp_path):
    from tests.readme_blocks import bash, commands, readme_block, shell_env, substitute
    from tests.test_readme_blocks import ok

    timeouts, bad = outage
    block = readme_block("Failed jobs in bulk", ".venv/bin/python -m scripts.jobs failed retry --queue email").code
    listing, dry, retry, export, delete = commands(substitute(block, {"-o failed.jsonl": f"-o {tmp_path}/f.jsonl"}))
    env = shell_env(outage_url(), DATABASE_URL="sqlite:///" + str(tmp_path / "unused.db"))
    listed = ok(bash(listing, env))
    assert "3 matching" in listed and all(j in listed for j in timeouts)
    assert "3 failed job(s) match queue=email error='Timeout'; dry run: nothing retried" in ok(bash(dry, env))
    assert "; 3 retried" in ok(bash(retry, env))
    ok(bash(export, env))
    assert [json.loads(line)["job_id"] for line in (tmp_path / "f.jsonl").read_text().splitlines()] == [bad]
    assert "1 failed job(s) match task=send_email user_id=42; 1 deleted" in ok(bash(delete, env))
    assert get_job(bad) is None and all(get_job(j).status.value == "retrying" for j in timeouts)


def outage_url() -> str:
    from core.config import get_settings

    return get_settings().redis_url


def test_the_readme_curl_lines(outage, api_server):
    from tests.readme_blocks import bash, commands, readme_block, shell_env, substitute
    from tests.test_readme_blocks import ok

    timeouts, bad = outage
    block = readme_block("Failed jobs in bulk", "http://127.0.0.1:5000/api/jobs/failed/retry").code
    listing, dry, delete = commands(substitute(block, {"127.0.0.1:5000": f"127.0.0.1:{api_server.port}"}))
    env = shell_env(outage_url(), JOBS_ADMIN_TOKEN=ADMIN_TOKEN)
    listed = json.loads(ok(bash(listing, env)))["data"]
    assert listed["total"] == 3 and [j["job_id"] for j in listed["jobs"]] == list(reversed(timeouts))
    counted = json.loads(ok(bash(dry, env)))["data"]
    assert (counted["matched"], counted["retried"], counted["dry_run"]) == (3, 0, True)
    deleted = json.loads(ok(bash(delete, env)))["data"]
    assert (deleted["matched"], deleted["deleted"], deleted["dry_run"]) == (1, 1, False)
    assert get_job(bad) is None and all(get_job(j).status.value == "failed" for j in timeouts)


def test_the_readme_retention_example(jobs_env, start_worker, capsys):
    from core.platform.db import session_scope
    from email_automation.models import SentEmail, SyncJob
    from tests.readme_blocks import readme_block
    from tests.test_readme_blocks import run_python

    old = time.time() - 120 * 86_400
    with session_scope() as session:
        session.add_all([SyncJob(user_id=f"u{i}", sync_type="manual", status="completed", created_at=old,
                                 completed_at=old) for i in range(2)])
        session.add_all([SentEmail(job_key=f"k{i}", to="a@b.c", subject="s", body="b", transport="outbox",
                                   status="outbox", created_at=old) for i in range(41)])
    start_worker("email", "--worker-class", "simple")
    run_python(readme_block("Periodic jobs, metrics and the operator CLI",
                            'job_id = email_queue.enqueue_job("prune_domain_data", {"days": 90})'))
    assert capsys.readouterr().out.strip() == "{'email_threads': 0, 'gmail_sync_jobs': 2, 'sent_emails': 41} 43"


# --- failed jobs exported before they expire (JOBS_FAILED_EXPORT), by the nightly cleanup ----------------
def test_jobs_about_to_expire_are_exported_once_to_a_file(jobs_env, setting, tmp_path):
    from core.ops.maintenance import nightly_cleanup

    target = tmp_path / "export" / "failed.jsonl"
    setting("JOBS_FAILED_EXPORT", str(target))
    setting("JOBS_FAILURE_TTL_EMAIL", "3600")  # within the two-day horizon; crm keeps the default 7 days
    soon = [fail_by_hand(email_queue, "always_fail", {"message": f"e{i}"}, "boom", "7") for i in range(3)]
    later = fail_by_hand(crm_queue, "crm_echo", {"text": "x"}, "boom")
    assert nightly_cleanup()["failed_exported"] == {"email": 3, "ai": 0, "crm": 0}
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert sorted(r["job_id"] for r in rows) == sorted(soon) and {r["error"] for r in rows} == {"boom"}
    assert later not in target.read_text()
    again = fail_by_hand(email_queue, "always_fail", {"message": "e9"}, "boom again")
    assert nightly_cleanup()["failed_exported"]["email"] == 1  # only the new one: each failure once
    assert json.loads(target.read_text().splitlines()[-1])["job_id"] == again
    assert nightly_cleanup()["failed_exported"]["email"] == 0 and len(target.read_text().splitlines()) == 4


def test_jobs_about_to_expire_are_posted_to_a_webhook_and_a_dead_one_does_not_stop_the_cleanup(jobs_env, setting):
    from core.ops.maintenance import nightly_cleanup
    from tests.peers import JsonHttpPeer

    peer = JsonHttpPeer(lambda body: {"ok": True})
    try:
        setting("JOBS_FAILED_EXPORT", f"{peer.url}/dead-letters")
        setting("JOBS_FAILURE_TTL_AI", "600")
        job_id = fail_by_hand(ai_queue, "ai_echo", {"text": "x"}, "TimeoutError: llm", "9")
        assert nightly_cleanup()["failed_exported"]["ai"] == 1
        [posted] = peer.requests
        assert posted["path"] == "/dead-letters" and posted["body"]["event"] == "failed_jobs_expiring"
        assert posted["body"]["queue"] == "ai" and [j["job_id"] for j in posted["body"]["jobs"]] == [job_id]
        setting("JOBS_HTTP_MAX_ATTEMPTS", "1")
        fail_by_hand(ai_queue, "ai_echo", {"text": "y"}, "boom")
        peer.script.append((500, {}, {"ok": False}))
        report = nightly_cleanup()
        assert "answered 500" in report["failed_exported"]["error"] and "user_index_ids_removed" in report
    finally:
        peer.stop()
