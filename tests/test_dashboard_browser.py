"""The dashboard end to end in headless Chromium (Playwright driving Debian's /usr/bin/chromium),
served by a real WSGI server on loopback, with real jobs run by a real worker process.
Screenshots land in tests/artifacts/ for a person to look at; with FIKIRI_UPDATE_SCREENSHOTS=1
the README's screenshots in docs/ are rewritten from the same run."""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from core.api.jobs import get_job
from core.api.queues import crm_queue, email_queue
from core.ops import dashboard_queries
from core.platform import keys
from core.platform.connection import get_redis
from core.queue import task_metrics
from core.schedule.periodic import register_periodic_jobs
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, wait_until

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS = ROOT / "docs"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (scripts/install_test_extras.sh installs it)")


@pytest.fixture
def live_dashboard(api_env):
    from app import create_app

    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def screenshot(page, name: str, doc_name: str | None = None) -> None:
    """Into tests/artifacts/ always; into docs/ as ``doc_name`` when FIKIRI_UPDATE_SCREENSHOTS=1."""
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if doc_name and os.environ.get("FIKIRI_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(DOCS / doc_name), full_page=True)


def submit_confirmed(page, button) -> None:
    """Click a form's button that asks to confirm (data-confirm), accept, and wait for the form's
    round trip: the next step then acts on the page the form came back to, never on one still
    navigating (a reload issued mid-navigation failed in CI: "Not attached to an active page")."""
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation(wait_until="load"):
        (page.locator(button) if isinstance(button, str) else button).click()


def test_operator_journey(live_dashboard, browser, start_worker):
    register_periodic_jobs()
    done = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(3)]
    failed = email_queue.enqueue_job("fail_times", {"key": "test:ui", "times": 1}, max_retries=0)
    running = email_queue.enqueue_job("sleep_then_count", {"seconds": 20, "key": "test:ui-run"})
    crm_queue.enqueue_job("crm_echo", {"text": "waiting for a crm worker"})
    start_worker("email")
    wait_until(lambda: get_job(failed).status.value == "failed" and get_job(running).status.value == "running"
               and all(get_job(j).status.value == "completed" for j in done), timeout=30)

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{live_dashboard}/dashboard/")
    assert "/dashboard/login" in page.url
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#queue-stats")
    email_row = page.locator('tr[data-queue="email"]')
    assert email_row.locator('[data-key="completed_jobs"]').inner_text() == "3"
    assert email_row.locator('[data-key="failed_jobs"]').inner_text() == "1"
    assert email_row.locator('[data-key="active_jobs"]').inner_text() == "1"
    assert page.locator('tr[data-queue="crm"] [data-key="pending_jobs"]').inner_text() == "1"
    screenshot(page, "overview.png")

    page.click("text=Failures")
    page.click(f"a[href='/dashboard/job/{failed}']")
    assert page.locator("#job-status").inner_text() == "failed"
    assert "planned failure 1 of 1" in page.locator("pre.traceback").inner_text()
    screenshot(page, "failed-job.png")
    submit_confirmed(page, "#retry")
    wait_until(lambda: get_job(failed).status.value == "completed", timeout=30)
    # the page follows the job live: its <main> is swapped in when the job ends
    page.wait_for_function("document.getElementById('job-status').textContent === 'completed'", timeout=10000)
    assert '"attempts": 2' in page.locator("#result").inner_text()

    page.click("text=Scheduler")
    row = page.locator('tr[data-id="periodic-daily-digest"]')
    submit_confirmed(page, row.locator("button[name=pause]"))
    assert page.locator('tr[data-id="periodic-daily-digest"] .badge').inner_text() == "paused"
    screenshot(page, "scheduler.png")
    with page.expect_navigation(wait_until="load"):
        page.locator('tr[data-id="periodic-daily-digest"] button[name=resume]').click()
    assert page.locator('tr[data-id="periodic-daily-digest"] .badge').inner_text() == "active"

    stranger = browser.new_page()
    stranger.goto(f"{live_dashboard}/dashboard/job/{failed}")
    assert "/dashboard/login" in stranger.url and "planned failure" not in stranger.content()


@pytest.fixture
def attacker_site():
    """A page on another site (localhost, while the dashboard is 127.0.0.1) that logs the visitor
    into the dashboard with the attacker's token: a login CSRF."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://localhost:{server.server_port}"
    server.shutdown()


def test_login_csrf_from_another_site_does_not_replace_the_session(live_dashboard, browser, attacker_site):
    from core.platform.auth import issue_user_token

    pages, attacker_base = attacker_site
    pages["/"] = f"""<html><body><form id="f" method="post" action="{live_dashboard}/dashboard/login">
      <input name="token" value="{issue_user_token('attacker')}"><input name="csrf_token" value="forged">
      </form><script>document.getElementById('f').submit()</script></body></html>"""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_dashboard}/dashboard/login")
    page.fill("input[name=token]", issue_user_token("victim"))
    page.click("button[type=submit]")
    assert page.locator(".who").inner_text() == "user victim"

    cookie = next(c for c in context.cookies() if c["name"] == "fikiri_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard" and "attacker" not in cookie["value"] and len(cookie["value"]) >= 40
    assert not any("." in c["value"] and c["name"] == "session" and len(c["value"]) > 200 for c in context.cookies())

    attack = context.new_page()
    attack.goto(attacker_base + "/")
    attack.wait_for_load_state()
    wait_until(lambda: "/dashboard/login" in attack.url, timeout=10, message="the forged form to be posted")
    assert "another site" in attack.content()  # refused: 400, the session untouched
    page.reload()
    assert page.locator(".who").inner_text() == "user victim"
    assert next(c for c in context.cookies() if c["name"] == "fikiri_session")["value"] == cookie["value"]
    context.close()


def seed_throughput_history() -> dict[str, tuple[int, int, int]]:
    """Counts for the buckets before the current one (the worker fills the current one for real),
    as the worker's metrics flush writes them, so the chart has a known history to hover over.
    Returns, per range, one seeded bucket: (its start, completed, failed); ``live``: the first
    bucket left to the worker."""
    now = time.time()
    minute, hour = int(now // 60) * 60, int(now // 3600) * 3600
    with get_redis().pipeline(transaction=False) as pipe:
        for i in range(1, 60):
            pipe.hset(task_metrics.minute_key(minute - 60 * i),
                      mapping={"completed": 12 + round(9 * math.sin(i / 6)), "failed": 2 if i % 11 == 0 else 0})
        for i in range(1, 24):
            pipe.hset(keys.metrics_hour(hour - 3600 * i),
                      mapping={"completed": 600 + round(350 * math.sin(i / 4)), "failed": 25 if i % 5 == 0 else 3})
        pipe.execute()
    return {"1h": (minute - 60 * 11, 12 + round(9 * math.sin(11 / 6)), 2),
            "24h": (hour - 3600 * 5, 600 + round(350 * math.sin(5 / 4)), 25), "live": (minute, 0, 0)}


def live_counts(live: tuple[int, int, int]) -> tuple[int, int]:
    """(completed, failed) the worker recorded from the first unseeded minute on."""
    points = [p for p in dashboard_queries.throughput("1h")["points"] if p["t"] >= live[0]]
    return sum(p["completed"] for p in points), sum(p["failed"] for p in points)


def log_in(page, base: str, token: str = ADMIN_TOKEN) -> None:
    page.goto(f"{base}/dashboard/")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_selector("header .who")


def hover_bucket(page, start: int) -> str:
    page.hover(f'#throughput-chart .hit[data-t="{start}"]')
    page.wait_for_selector("#chart-tooltip:not([hidden])")
    return page.locator("#chart-tooltip").inner_text()


def test_chart_workers_and_search(live_dashboard, browser, start_worker):
    seeded = seed_throughput_history()
    worker = start_worker("email")
    alice = [email_queue.enqueue_job("add", {"a": i, "b": 1}, user_id="alice") for i in range(3)]
    bob = email_queue.enqueue_job("add", {"a": 9, "b": 9}, user_id="bob")
    failed = email_queue.enqueue_job("always_fail", {"message": "bad input"}, user_id="alice")
    wait_until(lambda: live_counts(seeded["live"]) == (4, 1), timeout=30, message="the worker's metrics flush")
    # Only now the long job: a pre-forked child that takes it straight after the short ones would
    # hold their timings until it ends (it flushes between jobs at most once a second).
    running = email_queue.enqueue_job("sleep_then_count", {"seconds": 30, "key": "test:ui-busy"})
    wait_until(lambda: get_job(running).status.value == "running", timeout=30)

    page = browser.new_page(viewport={"width": 1280, "height": 680})
    log_in(page, live_dashboard)

    # the chart: a count axis and a time axis, a tooltip on hover, a 1 h / 24 h toggle
    chart = page.locator("#throughput-chart")
    assert chart.get_attribute("data-range") == "1h" and page.locator("#throughput-chart .hit").count() == 60
    assert page.locator("#throughput-chart .axis-y text").count() >= 3  # ticks and the unit
    assert re.fullmatch(r"\d\d:\d0", page.locator("#throughput-chart .axis-x text").first.text_content())
    assert "jobs / min" in chart.inner_html() and "time (UTC)" in chart.inner_html()
    start, completed, failures = seeded["1h"]
    assert page.locator("#chart-tooltip").is_hidden()
    tip = hover_bucket(page, start)
    assert tip.splitlines() == [f"{time.strftime('%H:%M', time.gmtime(start))}–"
                                f"{time.strftime('%H:%M', time.gmtime(start + 60))} UTC",
                                f"{completed} completed", f"{failures} failed"]
    minutes = {int(get_job(j).completed_at // 60) * 60 for j in [*alice, bob]}  # after the seeded ones
    assert sum(int(hover_bucket(page, minute).splitlines()[1].split()[0]) for minute in minutes) == 4
    screenshot(page, "chart-1h.png")
    page.mouse.move(5, 5)
    assert page.locator("#chart-tooltip").is_hidden()

    page.click('.range-toggle [data-range="24h"]')
    page.wait_for_selector('#throughput-chart[data-range="24h"]')
    assert page.locator("#throughput-chart .hit").count() == 24 and "range=24h" in page.url
    assert page.locator('.range-toggle [data-range="24h"]').get_attribute("aria-pressed") == "true"
    assert "jobs / hour" in chart.inner_html()
    start, completed, failures = seeded["24h"]
    assert hover_bucket(page, start).splitlines()[1:] == [f"{completed} completed", f"{failures} failed"]
    screenshot(page, "chart-24h.png", "dashboard.png")
    page.click('.range-toggle [data-range="1h"]')
    page.wait_for_selector('#throughput-chart[data-range="1h"]')
    assert page.locator("#throughput-chart .hit").count() == 60

    # the workers page, from the nav: the live worker process with its current job
    page.click("header nav >> text=Workers")
    row = page.locator(f'#workers tr[data-pid="{worker.pid}"]')
    assert row.locator('[data-key="state"]').inner_text() == "busy"
    assert row.locator(f'a[href="/dashboard/job/{running}"]').count() == 1
    assert re.fullmatch(r"\d+ s ago", row.locator('[data-key="heartbeat_age"]').inner_text())
    assert re.fullmatch(r"\d+\.\d MB", row.locator('[data-key="rss"]').inner_text())
    assert row.locator('[data-key="jobs_done"]').inner_text() == "5"  # the one in hand is not done
    screenshot(page, "workers.png", "dashboard-workers.png")

    # search from the header: by user, then bad input
    page.select_option("#nav-search select[name=by]", "user")
    page.fill("#nav-search input[name=q]", "alice")
    page.press("#nav-search input[name=q]", "Enter")
    results = page.locator("#search-results tbody tr")
    assert results.count() == 4 and "4 job(s) of user alice" in page.locator("#search-note").inner_text()
    shown = page.locator("#search-results").inner_text()
    assert all(job_id[:18] in shown for job_id in [*alice, failed]) and bob[:18] not in shown
    screenshot(page, "search.png", "dashboard-search.png")
    page.select_option("#search-form select[name=by]", "id")
    page.fill("#search-form input[name=q]", "not a job id!")
    page.click("#search-form button[type=submit]")
    assert "malformed job id 'not a job id!'" in page.locator("#search-error").inner_text()
    page.fill("#search-form input[name=q]", alice[0])
    page.click("#search-form button[type=submit]")
    assert page.url.endswith(f"/dashboard/job/{alice[0]}") and page.locator("#job-status").inner_text() == "completed"


def test_live_updates_flow_control_and_a_batch(live_dashboard, browser, start_worker):
    """The overview's counts and a job's status follow the events stream (no reload, the poll
    slowed to 15 s once the stream is up); a paused queue, jobs waiting for a rate limit with their
    reason, Stop on a running job, and a batch's page."""
    from core.workflows.chains import enqueue_batch

    start_worker("email", "--worker-class", "threaded", "--concurrency", "2", env={"JOBS_STOP_GRACE": "1"})
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    log_in(page, live_dashboard)
    page.wait_for_selector('body[data-live="yes"]')
    completed = page.locator('tr[data-queue="email"] [data-key="completed_jobs"]')
    before = int(completed.inner_text())
    email_queue.enqueue_many("add", [{"a": i, "b": 1} for i in range(4)])
    page.wait_for_function(f"document.querySelector('tr[data-queue=\"email\"] [data-key=\"completed_jobs\"]')"
                           f".textContent === '{before + 4}'", timeout=5000)  # well before a 15 s poll

    # pause from the overview; jobs queue up, then wait for a rate limit once resumed
    submit_confirmed(page, "#pause-email")
    assert page.locator('tr[data-queue="email"] [data-key="paused"]').inner_text() == "yes"
    ids = email_queue.enqueue_many("add", [{"a": i, "b": 2} for i in range(4)], rate_limit="1/m", rate_key="crm-api")
    submit_confirmed(page, "#resume-email")
    wait_until(lambda: sum(1 for i in ids if get_job(i).reason) == 3, timeout=10)
    page.goto(f"{live_dashboard}/dashboard/queue/email?state=delayed")
    assert page.locator("td.reason").count() == 3
    assert page.locator("td.reason").first.inner_text() == "rate limited: email crm-api 1/min"
    screenshot(page, "limited.png", "dashboard-limited.png")

    # a running job's page follows it live; Stop ends it
    running = email_queue.enqueue_job("stoppable", {"key": "test:live", "cooperative": False, "seconds": 30})
    wait_until(lambda: get_job(running).status.value == "running", timeout=10)
    page.goto(f"{live_dashboard}/dashboard/job/{running}")
    page.wait_for_selector('body[data-live="yes"]')
    submit_confirmed(page, "#stop")
    page.wait_for_function("document.getElementById('job-status').textContent === 'canceled'", timeout=10000)
    assert "stopped by admin" in page.locator("pre.traceback").inner_text()

    batch_id = enqueue_batch("email", "add", [{"a": i, "b": 3} for i in range(5)], on_complete="batch_done")
    wait_until(lambda: get_redis().hget(keys.batch(batch_id), "ended_at"), timeout=20)
    page.goto(f"{live_dashboard}/dashboard/batch/{batch_id}")
    assert page.locator("#batch-state").inner_text() == "done"
    assert page.locator("#batch-completed").inner_text() == "5" and page.locator("table.jobs tbody tr").count() == 5
    screenshot(page, "batch.png", "dashboard-batch.png")
