"""A rollback undoes a `command` step by its rollback_argv (seed 004's
migration down, say); a command without one is skipped, and so is a command
the undone run never reached."""

from __future__ import annotations

import socket

import pytest

from deployments import jobs
from deployments.choices import Kind, Status
from deployments.models import Deployment, LogLine, Release
from deployments.rollback import request_rollback
from environments.models import Step
from tests.conftest import env, image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def dev(catalog, tmp_path, settings):
    settings.DEPLOY_WORKDIR = str(tmp_path / "deployments")
    dev = env(catalog, "dev")  # no approvals: requests queue at once
    Step.objects.bulk_create([
        Step(environment=dev, order=1, name="Migrate", kind="command", config={
            "argv": ["sh", "-c", "echo migrate up ${release.version}"],
            "rollback_argv": ["sh", "-c", "echo migrate down to ${release.version}"],
        }),
        Step(environment=dev, order=2, name="Notify", kind="command",
             config={"argv": ["sh", "-c", "echo notified"]}),
    ])  # fmt: skip
    return dev


def shipped(release, dev, users) -> Deployment:
    deployment = Deployment.request(release, dev, users["alice"], f"ship {release.version}")
    assert jobs.run_deployment(deployment.pk) == Status.SUCCEEDED
    return deployment


def log_of(deployment: Deployment) -> list[str]:
    return list(LogLine.objects.filter(deployment=deployment).values_list("text", flat=True))


def test_a_rollback_runs_the_rollback_command_and_skips_a_command_without_one(
    dev, release, users, catalog
):
    shipped(release, dev, users)
    images = {s: image(s, "b") for s in ("fraud-api", "fraud-ml", "fraud-worker")}
    newer = Release.register(catalog, "1.5.0", images, users["alice"])
    shipped(newer, dev, users)

    rollback = request_rollback(dev, users["alice"], "1.5.0 misbehaves")
    assert rollback.kind == Kind.ROLLBACK and rollback.status == Status.QUEUED
    assert jobs.run_deployment(rollback.pk) == Status.SUCCEEDED

    text = log_of(rollback)
    assert "migrate down to 1.4.0" in text  # the previous release comes back
    assert not any(line.startswith("migrate up") for line in text)
    assert "No rollback command configured; nothing to undo." in text
    assert "notified" not in text


def test_a_bake_that_cannot_read_its_alarms_fails_without_rolling_back(
    dev, release, users, catalog
):
    """Only a fired alarm rolls back by itself: a bake blind to its sources
    fails the deployment and leaves the decision to people."""
    shipped(release, dev, users)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    Step.objects.filter(environment=dev, order=2).update(
        kind="bake",
        config={"duration_seconds": 1, "poll_seconds": 0.1,
                "alertmanager": {"url": url, "matchers": []}},
    )  # fmt: skip
    images = {s: image(s, "c") for s in ("fraud-api", "fraud-ml", "fraud-worker")}
    newer = Release.register(catalog, "1.6.0", images, users["alice"])
    blind = Deployment.request(newer, dev, users["alice"], "ship 1.6.0")

    assert jobs.run_deployment(blind.pk) == Status.FAILED
    blind.refresh_from_db()
    assert "Cannot read Alertmanager" in blind.error
    assert not Deployment.objects.filter(rollback_of=blind).exists()
    assert jobs.NO_AUTOMATIC_ROLLBACK in log_of(blind)
