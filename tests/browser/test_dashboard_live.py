"""The dashboard in a real browser: a card changes in the open page, without a
reload, when a deployment progresses and when a CloudWatch alarm (moto server)
goes to ALARM; without WebSockets the page polls.

The page is served by uvicorn (WebSockets need ASGI), as for the live logs;
the domain methods and the alarm poller run here, off Playwright's loop, and
their broadcasts reach the page through the same Redis.
"""

from __future__ import annotations

import re

import boto3
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from deployments import jobs
from deployments.choices import Status, StepStatus
from deployments.models import Deployment
from environments.alarms import poll_environment
from environments.live import environment_group
from environments.models import Step
from tests.browser.conftest import screenshot
from tests.browser.test_live_logs import (  # noqa: F401 (fixtures)
    alice,
    asgi_server,
    off_the_browser_loop,
    page,
    sign_in,
)
from tests.conftest import env
from tests.live import wait_subscribed
from tests.runners.conftest import demo_aws, moto_endpoint  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def open_dashboard(page: Page, environment) -> None:
    sign_in(page)
    page.goto("/")
    expect(page.get_by_test_id("dashboard-state")).to_have_text("live")
    # A live page does not poll: a change published before the server's
    # SUBSCRIBE is in effect would never reach it.
    wait_subscribed(environment_group(environment.pk))
    page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded


def test_it_follows_a_deployment_live(page: Page, alice, catalog, release):  # noqa: F811
    dev = env(catalog, "dev")
    steps = [
        Step.objects.create(environment=dev, order=1, name="migrate", kind="command"),
        Step.objects.create(environment=dev, order=2, name="fraud-api rolling", kind="ecs_rolling"),
    ]
    # Test setup only: a request approved and waiting for a worker.
    deployment = Deployment.objects.create(
        release=release, environment=dev, requested_by=alice, reason="Dashboard live test",
        status=Status.QUEUED, queued_at=timezone.now(),
    )  # fmt: skip
    open_dashboard(page, dev)
    card = page.locator(f"#environment-card-{dev.pk}")
    expect(card.get_by_test_id("last-deployment")).to_have_text("none")

    off_the_browser_loop(deployment.start, "worker-1")
    expect(card.get_by_test_id("step-progress")).to_have_text("step 1 of 2")
    expect(card.get_by_test_id("problem")).to_have_text(["running"])

    runs = []

    def progress(step: Step) -> None:
        loaded = Deployment.objects.get(pk=deployment.pk)
        if runs:
            jobs._end_step(runs[-1], StepStatus.SUCCEEDED)
        runs.append(jobs._step_run(loaded, step, "deploy"))

    off_the_browser_loop(progress, steps[0])
    expect(card.get_by_test_id("step-progress")).to_have_text("step 1 of 2: migrate")
    off_the_browser_loop(progress, steps[1])
    expect(card.get_by_test_id("step-progress")).to_have_text("step 2 of 2: fraud-api rolling")
    screenshot(page, "dashboard-live-running")

    def succeed() -> None:
        jobs._end_step(runs[-1], StepStatus.SUCCEEDED)
        Deployment.objects.get(pk=deployment.pk).finish(Status.SUCCEEDED)

    off_the_browser_loop(succeed)
    expect(card.get_by_test_id("last-status")).to_have_text("Succeeded")
    expect(card.get_by_test_id("running")).to_have_count(0)
    expect(card.get_by_test_id("current-release")).to_contain_text("1.4.0")
    # The card carries the absolute time; the page words it, keeping it as the tooltip.
    finished = card.get_by_test_id("last-deployment").locator("time[data-ago]")
    expect(finished).to_have_text("just now")
    expect(finished).to_have_attribute("title", re.compile(r"^\d{1,2} \w{3} \d{2}:\d{2} UTC$"))
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "dashboard-live-succeeded")


def test_it_shows_an_alarm_going_off_in_moto_live(
    page: Page,
    alice,  # noqa: F811
    catalog,
    demo_aws,  # noqa: F811
    moto_endpoint,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    staging = env(catalog, "staging")
    prefix = demo_aws["alarms"][0].rsplit("-", 1)[0] + "-"
    staging.alarm_sources = {"cloudwatch": {"alarm_prefix": prefix}}
    staging.save(update_fields=["alarm_sources"])
    poll_environment(staging)  # all OK, as the sandbox starts them
    open_dashboard(page, staging)
    card = page.locator(f"#environment-card-{staging.pk}")
    expect(card.get_by_test_id("alarm-state")).to_have_attribute("data-state", "OK")
    expect(card.get_by_test_id("problem")).to_have_count(0)

    firing = demo_aws["alarms"][0]
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="ca-central-1")
    cloudwatch.set_alarm_state(
        AlarmName=firing, StateValue="ALARM", StateReason="5xx above 10 for 2 periods"
    )
    off_the_browser_loop(poll_environment, staging)
    expect(card.get_by_test_id("alarm-state")).to_have_attribute("data-state", "ALARM")
    expect(card.get_by_test_id("alarm-names")).to_have_text(firing)
    expect(card.get_by_test_id("problem")).to_have_text(["alarm"])
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "dashboard-live-alarm")


def test_it_polls_when_the_socket_cannot_open(page: Page, alice, catalog, release):  # noqa: F811
    production = env(catalog, "production")
    page.add_init_script("window.WebSocket = function () { throw new Error('blocked'); };")
    sign_in(page)
    page.goto("/")
    expect(page.get_by_test_id("dashboard-state")).to_have_text("polling")
    card = page.locator(f"#environment-card-{production.pk}")
    expect(card.get_by_test_id("pending")).to_have_count(0)
    # Test setup only: a request now awaiting approval.
    Deployment.objects.create(
        release=release, environment=production, requested_by=alice, reason="Polling test",
        status=Status.AWAITING_APPROVAL, required_approvals=2,
    )  # fmt: skip
    # The next poll is up to 10 s away; the rest is a loaded machine's margin.
    expect(card.get_by_test_id("pending")).to_contain_text("1 awaiting approval", timeout=30_000)
    screenshot(page, "dashboard-polling")
