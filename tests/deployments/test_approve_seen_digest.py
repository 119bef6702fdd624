"""An approval is of what the approver saw: the page and the API carry the
approval digest shown, and a plan that changed since is refused, not approved."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deployments.choices import Status
from deployments.models import Deployment
from tests.api.conftest import api, request_deployment  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def awaiting(release, users) -> Deployment:
    deployment = request_deployment(release, users)
    assert deployment.status == Status.AWAITING_APPROVAL
    return deployment


def replan(deployment: Deployment) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(plan_sha256="f" * 64)


def test_the_page_refuses_an_approval_of_a_plan_that_changed_since(client, users, awaiting):
    client.force_login(users["bob"])
    page = client.get(reverse("deployment-detail", args=[awaiting.pk]))
    seen = awaiting.approval_digest()
    assert f'name="digest" value="{seen}"' in page.content.decode()

    replan(awaiting)
    refused = client.post(reverse("deployment-approve", args=[awaiting.pk]),
                          {"digest": seen, "comment": "ok"}, follow=True)  # fmt: skip

    assert "The plan changed since you looked" in refused.content.decode()
    assert not awaiting.approvals.exists()
    current = Deployment.objects.get(pk=awaiting.pk).approval_digest()
    approved = client.post(reverse("deployment-approve", args=[awaiting.pk]),
                           {"digest": current, "comment": "ok"})  # fmt: skip
    assert approved.status_code == 302
    assert awaiting.approvals.get().digest == current


def test_the_api_answers_409_to_a_stale_digest(api, awaiting):  # noqa: F811
    seen = awaiting.approval_digest()
    replan(awaiting)
    response = api("bob").post(reverse("api-deployment-approve", args=[awaiting.pk]),
                               {"digest": seen}, format="json")  # fmt: skip

    assert response.status_code == 409
    assert "The plan changed since you looked" in response.json()["detail"]
    assert not awaiting.approvals.exists()
