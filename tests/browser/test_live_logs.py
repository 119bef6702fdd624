"""Live deployment logs in a real browser: lines written by the engine's
LogWriter appear in the open page, in order, as text, with nothing executed.

WebSockets need an ASGI server, so the page is served by uvicorn in a
subprocess against this test's database (committed data: transaction=True)
and the same Redis, where the channel layer carries the lines.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Page, expect

from deployments.choices import Status
from deployments.logs import LogWriter
from deployments.models import Deployment, LogLine, StepRun
from deployments.viewers import broadcast_status, group_name
from tests.browser.conftest import screenshot
from tests.conftest import env
from tests.live import wait_subscribed
from tests.servers import uvicorn_argv

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"
ROOT = Path(__file__).resolve().parents[2]
HTML_LINE = "<script>alert(1)</script>"
IMG_LINE = '<img src="x" onerror="window.__pwned = 1">'
ANSI_LINE = "\x1b[1;31mERROR\x1b[0m migration \x1b[32mretried\x1b[0m"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_database_url() -> str:
    db = connection.settings_dict
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{host}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def off_the_browser_loop(function, *args) -> None:
    """Run `function` in a thread of its own: Playwright's event loop runs in this
    one, and async_to_sync (the channel layer's sync API) refuses to run there."""

    def run() -> None:
        try:
            function(*args)
        finally:
            connection.close()  # this thread's own connection, if it opened one

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)  # done in well under a second, unless the machine is loaded
    assert not worker.is_alive(), f"{function.__name__} did not return in 60 s"


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    # Importing Django and the portal takes seconds on a loaded machine, and so
    # may the first request (which loads the URLconf): generous waits for both.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the ASGI server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health/live", timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the ASGI server did not start in time")


@pytest.fixture
def asgi_server(transactional_db, tmp_path) -> Iterator[str]:
    """uvicorn serving the portal on a free port, against the test database."""
    port = free_port()
    environ = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": django_settings.REDIS_URL,
        "SECRET_KEY": os.environ["SECRET_KEY"],
        "AUDIT_KEY": os.environ["AUDIT_KEY"],
        "HTTPS": "0",
        "DEBUG": "1",  # static files from the finders, no collectstatic needed
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = (tmp_path / "asgi.log").open("w")
    process = subprocess.Popen(
        uvicorn_argv(port), cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def alice(users, settings):
    # The server runs with the real hashers; the suite's fast MD5 hash means nothing to it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    alice = users["alice"]
    alice.set_password(PASSWORD)
    alice.save(update_fields=["password"])
    return alice


@pytest.fixture
def running(release, users, catalog) -> tuple[Deployment, StepRun]:
    # Test setup only: a deployment the engine is running (the engine is not under test).
    deployment = Deployment.objects.create(
        release=release, environment=env(catalog, "dev"), requested_by=users["alice"],
        reason="Live log test", status=Status.RUNNING, started_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )  # fmt: skip
    step = StepRun.objects.create(deployment=deployment, order=1, name="migrate",
                                  kind="command", status="running")  # fmt: skip
    return deployment, step


@pytest.fixture
def page(browser, asgi_server) -> Iterator[Page]:
    context = browser.new_context(base_url=asgi_server, viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Page) -> None:
    page.goto("/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def expected_text(n: int) -> str:
    return {10: HTML_LINE, 20: "ERROR migration retried", 30: IMG_LINE}.get(n, f"applying {n}")


def written_text(n: int) -> str:
    return {10: HTML_LINE, 20: ANSI_LINE, 30: IMG_LINE}.get(n, f"applying {n}")


def test_it_shows_log_lines_live_in_order_as_text(page: Page, alice, running):
    deployment, step = running
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page)
    page.goto(f"/deployments/{deployment.pk}/")
    expect(page.get_by_test_id("log-state")).to_have_text("live")
    wait_subscribed(group_name(deployment.pk))  # the server's SUBSCRIBE is in effect
    page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded

    lines = page.locator("#deployment-log .log-line")
    writer = LogWriter(deployment.pk)
    writer.set_step(step.pk, "migrate")
    try:
        for n in range(1, 51):
            writer.write(written_text(n))
            page.wait_for_timeout(50)
            if n == 25:
                # Half-way: what was written so far is already on screen.
                expect(lines.nth(19)).to_have_text(expected_text(20))
    finally:
        off_the_browser_loop(writer.close)

    expect(lines).to_have_count(50)
    assert lines.all_text_contents() == [expected_text(n) for n in range(1, 51)]
    seqs = lines.evaluate_all("rows => rows.map(row => Number(row.dataset.seq))")
    assert seqs == list(range(1, 51))
    expect(page.locator("#deployment-log .log-step-name")).to_have_text(["migrate"])
    assert page.locator("#deployment-log script, #deployment-log img").count() == 0
    assert page.evaluate("window.__sameDocument") is True
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []

    # The engine finishes: a status message refreshes the step list and the badge
    # (a live page does not poll: only the message can do it, however long it takes).
    StepRun.objects.filter(pk=step.pk).update(status="succeeded", finished_at=timezone.now())
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Status.SUCCEEDED, finished_at=timezone.now()
    )
    off_the_browser_loop(broadcast_status, deployment.pk, Status.SUCCEEDED)
    expect(page.locator('[data-testid="step-run"][data-step-status="succeeded"]')).to_have_count(1)
    expect(page.get_by_test_id("deployment-status")).to_have_text("Succeeded")
    expect(page.get_by_role("button", name="Cancel deployment")).to_be_hidden()
    screenshot(page, "live-logs")


def test_it_polls_the_api_when_the_socket_cannot_open(page: Page, alice, running):
    deployment, step = running
    page.add_init_script("window.WebSocket = function () { throw new Error('blocked'); };")
    sign_in(page)
    writer = LogWriter(deployment.pk)
    writer.set_step(step.pk, "migrate")
    writer.write("before the page opened")
    deadline = time.monotonic() + 30
    while not LogLine.objects.filter(deployment=deployment).exists():
        assert time.monotonic() < deadline, "the writer stored nothing in 30 s"
        time.sleep(0.02)  # the writer's flusher stores it within a batch interval
    page.goto(f"/deployments/{deployment.pk}/")
    expect(page.get_by_test_id("log-state")).to_have_text("polling")
    try:
        for n in range(1, 6):
            writer.write(f"polled {n}")
    finally:
        off_the_browser_loop(writer.close)
    lines = page.locator("#deployment-log .log-line")
    expect(lines).to_have_count(6)  # at the next poll (every 2 s), within the default 15 s
    assert lines.all_text_contents() == ["before the page opened"] + [
        f"polled {n}" for n in range(1, 6)
    ]
    screenshot(page, "live-logs-polling")


def test_the_other_panels_follow_an_approval_without_a_reload(page: Page, alice, release, users,
                                                             catalog):  # fmt: skip
    staging = env(catalog, "staging")
    staging.required_approvals = 2
    staging.save()
    deployment = Deployment.request(release, staging, users["alice"], "Live panels")
    sign_in(page)
    page.goto(f"/deployments/{deployment.pk}/")
    approvals = page.get_by_test_id("approvals")
    expect(approvals).to_contain_text("0 of 2 needed")
    expect(page.get_by_test_id("log-state")).to_have_text("live")
    wait_subscribed(group_name(deployment.pk))
    page.evaluate("window.__sameDocument = true")

    off_the_browser_loop(deployment.approve, users["bob"], "Plan read")

    # Still awaiting approval: no new status, yet the page shows bob's approval.
    expect(page.get_by_test_id("approvals")).to_contain_text("1 of 2 needed")
    expect(page.get_by_test_id("approvals")).to_contain_text("bob")
    expect(page.get_by_test_id("timeline")).to_contain_text("Approved")
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "live-panels-approval-arrives")
