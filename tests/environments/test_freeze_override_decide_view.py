"""The second person approves or rejects a break-glass request."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from environments.choices import OverrideStatus
from environments.models import FreezeOverride
from tests.conftest import env
from tests.environments.ui import browser, last_event, messages_of


@pytest.fixture
def override(catalog, users) -> FreezeOverride:
    return FreezeOverride.request(
        env(catalog, "production"), users["erin"], "Sev1 fix", timedelta(hours=1)
    )


def url(override) -> str:
    return reverse("freeze-override-decide", args=[override.pk])


def test_it_approves_and_audits_it(override, users):
    response = browser(users["bob"]).post(url(override), {"decision": "approve"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "environment-detail", args=["fraud-detector", "production"]
    )
    assert any("Break-glass approved" in m for m in messages_of(response))
    override.refresh_from_db()
    assert override.status == OverrideStatus.ACTIVE
    assert override.decided_by == users["bob"]
    assert override.is_active
    event = last_event("freeze_override.approved")
    assert event.actor_id == users["bob"].pk
    assert event.after["status"] == OverrideStatus.ACTIVE


def test_it_rejects(users, override):
    browser(users["carol"]).post(url(override), {"decision": "reject"})
    override.refresh_from_db()
    assert override.status == OverrideStatus.REJECTED
    assert last_event("freeze_override.rejected") is not None


def test_the_requester_cannot_decide(users, override):
    response = browser(users["erin"]).post(url(override), {"decision": "approve"}, follow=True)
    assert response.status_code == 200
    assert any("second person" in m for m in messages_of(response))
    override.refresh_from_db()
    assert override.status == OverrideStatus.PENDING
    assert last_event("freeze_override.approved") is None


def test_it_says_when_already_decided(override, users):
    override.approve(users["bob"])
    response = browser(users["carol"]).post(url(override), {"decision": "reject"}, follow=True)
    assert any("already decided" in m for m in messages_of(response))
    override.refresh_from_db()
    assert override.status == OverrideStatus.ACTIVE


def test_it_refuses_an_unknown_decision(users, override):
    response = browser(users["bob"]).post(url(override), {"decision": "maybe"}, follow=True)
    assert any("Choose approve or reject" in m for m in messages_of(response))
    override.refresh_from_db()
    assert override.status == OverrideStatus.PENDING


def test_it_is_forbidden_to_viewers_and_deployers(users, override):
    for name in ("alice", "dave"):
        assert browser(users[name]).post(url(override), {"decision": "approve"}).status_code == 403
    override.refresh_from_db()
    assert override.status == OverrideStatus.PENDING


def test_it_hides_overrides_of_environments_without_a_role(users, override):
    assert browser(users["mallory"]).post(url(override), {"decision": "approve"}).status_code == 404


def test_it_refuses_get(users, override):
    assert browser(users["bob"]).get(url(override)).status_code == 405


def test_it_needs_sign_in(client, override):
    assert client.post(url(override), {"decision": "approve"})["Location"].startswith(
        reverse("login")
    )
    override.refresh_from_db()
    assert override.status == OverrideStatus.PENDING
