"""The monitor in a real headless Chromium (Debian's), next to a real worker node.

Playwright's bundled driver runs /usr/bin/chromium (``./test.sh`` installs
it with apt when it is missing); no browser is ever downloaded.  A
screenshot of the workers page goes to ``MONITOR_SCREENSHOT`` (default:
``workers.png`` in the test's tmp dir).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from actors import keys
from tests.support import extra_actors as test_actors
from tests.support.monitor import start_monitor
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_workers_broker_and_dead_letter_pages_in_a_real_browser(celery_worker, redis_client, browser_page,
                                                                 tmp_path):
    # Given a worker node on the default queue only, three messages waiting in "state",
    # and one message dead-lettered by the worker
    worker = celery_worker("worker -l info -P solo -Q default -n browser@%h")
    # the retry action is guarded as the API is: open it as Flower 2 does
    monitor = start_monitor(celery_worker, FLOWER_UNAUTHENTICATED_API="true")
    worker.wait_ready()
    for n in range(3):
        test_actors.test_record_state.send(f"s{n}")
    failed = test_actors.test_fail_unless.send("replayed", "test:allow")
    wait_for(lambda: redis_client.zcard(keys.dead_key("default")) == 1)
    node = f"browser@{socket.gethostname()}"
    page = browser_page

    # When the workers page opens, it shows the running worker and the queue counts
    page.goto(monitor.url + "/workers")
    expect(page.locator("#workers tr.worker")).to_have_count(1)
    row = page.locator("#workers tr.worker")
    expect(row.locator("td").nth(0)).to_have_text(node)
    expect(row.locator("td").nth(1)).to_have_text("Online")
    expect(row.locator("td").nth(4)).to_have_text("default")
    expect(page.locator('#queues tr[data-queue="state"] td.waiting')).to_have_text("3")
    shot = Path(os.environ.get("MONITOR_SCREENSHOT") or tmp_path / "workers.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0

    # And the broker page shows the same count
    page.goto(monitor.url + "/broker")
    expect(page.locator('#broker tr[data-queue="state"] td.waiting')).to_have_text("3")
    expect(page.locator('#broker tr[data-queue="default"] td.waiting')).to_have_text("0")

    # When "retry" is clicked on the dead-letter page (with the task's cause fixed)
    redis_client.set("test:allow", 1)
    page.goto(monitor.url + "/dead")
    dead_row = page.locator(f'table.dead[data-queue="default"] tr[data-id="{failed.message_id}"]')
    expect(dead_row).to_have_count(1)
    expect(dead_row).to_contain_text("ValueError('test:allow is not set')")
    dead_row.locator("button.retry").click()

    # Then the page says so, the row goes, and the message went back to its queue and ran again
    expect(page.locator("#flash")).to_have_text(f"message {failed.message_id} is back in queue default")
    expect(dead_row).to_have_count(0)
    assert redis_client.zcard(keys.dead_key("default")) == 0
    wait_for(lambda: redis_client.lrange("test:done", 0, -1) == [b"replayed"])
    assert redis_client.lrange("test:runs", 0, -1) == [b"replayed", b"replayed"]
