"""The step list partial the live log panel re-fetches when the deployment moves on."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments.models import Deployment, StepRun
from tests.conftest import env
from tests.environments.ui import browser


@pytest.fixture
def deployment(release, users) -> Deployment:
    deployment = Deployment.request(release, env(release.application, "staging"), users["alice"],
                                    "Bedrock timeout fix")  # fmt: skip
    for order, (name, status) in enumerate([("migrate", "succeeded"), ("<roll>", "running"),
                                            ("smoke", "pending")], start=1):  # fmt: skip
        StepRun.objects.create(deployment=deployment, order=order, name=name, kind="command",
                               status=status, error="boom" if order == 2 else "")  # fmt: skip
    return deployment


def url(deployment) -> str:
    return reverse("deployment-steps", args=[deployment.pk])


def test_it_lists_the_steps_in_order_with_their_status(users, deployment):
    response = browser(users["dave"]).get(url(deployment))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="step-runs"')
    assert "<html" not in html
    positions = [html.index(name) for name in ("migrate", "&lt;roll&gt;", "smoke")]
    assert positions == sorted(positions)
    assert "<roll>" not in html
    statuses = [html.index(f'data-step-status="{s}"') for s in ("succeeded", "running", "pending")]
    assert statuses == sorted(statuses)
    assert "boom" in html


def test_it_hides_deployments_without_a_role(users, deployment):
    assert browser(users["mallory"]).get(url(deployment)).status_code == 404


def test_it_refuses_post(users, deployment):
    assert browser(users["alice"]).post(url(deployment)).status_code == 405


def test_it_needs_sign_in(client, deployment):
    assert client.get(url(deployment))["Location"].startswith(reverse("login"))
