"""A real browser for the page tests: Playwright driving Debian's chromium.

Playwright's own browser download is not used; the tests launch the
`chromium` package from apt. Screenshots go to test-results/ (gitignored).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import expect

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
# What a page shows after its scripts ran (a chart drawn, a card updated) may
# take longer than Playwright's 5 s on a machine a benchmark starves: the
# charts test waited out plotly.js (4.8 MB, parsed and run) beside
# scripts/bench-under-load.sh. The same patience as the actions below.
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
def browser(monkeypatch) -> Iterator:
    """Chromium for one test.

    Playwright's sync API keeps an event loop running in the test's thread,
    which makes Django refuse ORM calls there; the flag lifts that for the
    test only. The browser lives no longer than the test so that no loop is
    left running under the tests that follow.
    """
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it (.ci/run); a skip there would hide a gap
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        # While Playwright's loop runs, Django keeps a separate connection for
        # this thread; close it now, as pytest-django will only see the other.
        connections.close_all()
        browser.close()
    wait_for_request_threads()


@pytest.fixture
def page(browser, live_server, request) -> Iterator:
    """A fresh browser context against the live server; its last screen is saved."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS / f"{screenshot_name(request.node.name)}-last.png", full_page=True)
    context.close()


def wait_for_request_threads(timeout: float = 30.0) -> None:
    """Let the live server finish the browser's keep-alive connections.

    Each one is served by a thread with its own database connection, closed
    only when the browser (not just its context) hangs up; one left open makes
    the test database impossible to drop at the end of the session.
    """
    for thread in threading.enumerate():
        if "process_request_thread" in thread.name:
            thread.join(timeout)


def screenshot_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def screenshot(page, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS / f"{screenshot_name(name)}.png", full_page=True)
