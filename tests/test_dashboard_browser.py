"""The dashboard end to end in headless Chromium (Playwright driving Debian's /usr/bin/chromium),
served by a real WSGI server on loopback, with real jobs run by a real worker process.
Screenshots land in tests/artifacts/ for a person to look at."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from core.periodic import register_periodic_jobs
from core.redis_queues import crm_queue, email_queue, get_job
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, wait_until

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
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
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    page.click("text=Failures")
    page.click(f"a[href='/dashboard/job/{failed}']")
    assert page.locator("#job-status").inner_text() == "failed"
    assert "planned failure 1 of 1" in page.locator("pre.traceback").inner_text()
    page.screenshot(path=str(ARTIFACTS / "failed-job.png"), full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#retry")
    wait_until(lambda: get_job(failed).status.value == "completed", timeout=30)
    page.reload()
    assert page.locator("#job-status").inner_text() == "completed"
    assert '"attempts": 2' in page.locator("#result").inner_text()

    page.click("text=Scheduler")
    row = page.locator('tr[data-id="periodic-daily-digest"]')
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button[name=pause]").click()
    assert page.locator('tr[data-id="periodic-daily-digest"] .badge').inner_text() == "paused"
    page.screenshot(path=str(ARTIFACTS / "scheduler.png"), full_page=True)
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
    from core.auth import issue_user_token

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
