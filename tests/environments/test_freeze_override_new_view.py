"""Break glass: an admin asks to lift a freeze, with a typed reason and a duration."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse

from environments.choices import OverrideStatus
from environments.models import FreezeOverride
from tests.environments.ui import browser, last_event, messages_of

URL = reverse("freeze-override-new", args=["fraud-detector", "production"])
FORM = {"reason": "Sev1: card authorisations failing", "duration_minutes": "90"}


def test_it_shows_the_form_to_admins(users, catalog):
    response = browser(users["erin"]).get(URL)
    assert response.status_code == 200
    assert b'name="reason"' in response.content
    assert b'name="duration_minutes"' in response.content


def test_it_requests_an_override_and_audits_it(catalog, users):
    response = browser(users["erin"]).post(URL, FORM, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "environment-detail", args=["fraud-detector", "production"]
    )
    assert any("Another approver or admin must approve it" in m for m in messages_of(response))
    override = FreezeOverride.objects.get()
    assert override.status == OverrideStatus.PENDING
    assert override.requested_by == users["erin"]
    assert override.duration == timedelta(minutes=90)
    event = last_event("freeze_override.requested")
    assert event.after == {"reason": FORM["reason"], "duration_minutes": 90}
    assert event.environment_id == override.environment_id
    assert event.actor_id == users["erin"].pk


def test_it_refuses_a_duration_out_of_range(users, catalog):
    response = browser(users["erin"]).post(URL, {**FORM, "duration_minutes": "3"})
    assert response.status_code == 400
    assert "duration_minutes" in response.context["form"].errors
    assert not FreezeOverride.objects.exists()
    assert last_event("freeze_override.requested") is None


def test_it_refuses_a_blank_reason(users, catalog):
    response = browser(users["erin"]).post(URL, {**FORM, "reason": "  "})
    assert response.status_code == 400
    assert "reason" in response.context["form"].errors
    assert not FreezeOverride.objects.exists()


def test_it_is_forbidden_to_non_admins(users, catalog):
    for name in ("alice", "bob", "dave"):
        assert browser(users[name]).post(URL, FORM).status_code == 403
    assert not FreezeOverride.objects.exists()


def test_it_hides_environments_without_a_role(users, catalog):
    assert browser(users["mallory"]).post(URL, FORM).status_code == 404
    assert not FreezeOverride.objects.exists()


def test_it_refuses_other_methods(users, catalog):
    assert browser(users["erin"]).put(URL).status_code == 405


def test_it_needs_sign_in(client, catalog):
    assert client.post(URL, FORM)["Location"].startswith(reverse("login"))
    assert not FreezeOverride.objects.exists()
