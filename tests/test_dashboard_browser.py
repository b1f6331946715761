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
