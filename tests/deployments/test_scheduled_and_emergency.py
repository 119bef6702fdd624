"""Scheduled changes (a window the deployment may start in) and emergency
changes (break-glass or a policy override: reviewed after they ran by someone
who took no part). Real RQ jobs on Redis, run by an in-process worker; the
housekeeping jobs are called as the scheduler calls them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from deployments import evidence, jobs
from deployments.choices import NotificationEvent, Status
from deployments.models import Deployment, Notification
from environments.choices import FreezeKind
from environments.models import FreezeOverride, FreezeWindow
from portal.cards import build_cards, card_environments
from portal.core import tokens
from portal.core.choices import Role
from portal.core.models import AuditEvent
from portal.core.roles import Conflict, Forbidden, PolicyError
from tests.api.conftest import api  # noqa: F401
from tests.conftest import env, grant, work

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_a_window_that_makes_no_sense_is_refused_naming_the_field(release, users):
    dev, now = env(release.application, "dev"), timezone.now()
    cases = [
        ({"not_after": now - timedelta(minutes=1)}, "not_after", "must end in the future"),
        ({"not_before": now + timedelta(hours=2), "not_after": now + timedelta(hours=1)},
         "not_after", "end after it begins"),
        ({"not_before": now + timedelta(days=31)}, "not_before", "30 days ahead"),
        ({"not_before": (now + timedelta(hours=1)).replace(tzinfo=None)}, "not_before",
         "time zone"),
    ]  # fmt: skip
    for window, field, message in cases:
        with pytest.raises(PolicyError, match=message) as refused:
            Deployment.request(release, dev, users["alice"], "later", **window)
        assert refused.value.field == field
    assert not Deployment.objects.exists()


def test_an_approved_request_waits_for_its_window_then_starts(release, users, queues):
    dev = env(release.application, "dev")  # no approval needed: queued at once
    opens = timezone.now() + timedelta(hours=2)
    deployment = Deployment.request(release, dev, users["alice"], "night change", not_before=opens)
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED  # the run job came and left it waiting

    jobs.wake_waiting_deployments()  # the sweeper: not yet either
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED
    card = build_cards(card_environments([dev.pk]))[0]
    assert card.environment.next_window == opens  # the dashboard says it is scheduled

    Deployment.objects.filter(pk=deployment.pk).update(not_before=timezone.now())  # time passes
    jobs.wake_waiting_deployments()
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.SUCCEEDED


def test_a_window_that_closes_before_the_start_expires_the_request(release, users, queues):
    dev = env(release.application, "dev")
    deployment = Deployment.request(
        release, dev, users["alice"], "window", not_before=timezone.now() + timedelta(hours=1),
        not_after=timezone.now() + timedelta(hours=2),
    )  # fmt: skip
    Deployment.objects.filter(pk=deployment.pk).update(
        not_before=timezone.now() - timedelta(hours=2),
        not_after=timezone.now() - timedelta(minutes=1),
    )
    assert jobs.expire_stale_requests() == 1
    deployment.refresh_from_db()

    assert deployment.status == Status.EXPIRED
    assert deployment.error.startswith("Its window closed at ")
    work(queues)  # its run job finds nothing to do
    deployment.refresh_from_db()
    assert deployment.status == Status.EXPIRED


@pytest.fixture
def frank(catalog) -> User:
    """An approver of staging who takes no part in the change below."""
    user = User.objects.create_user("frank", "frank@example.com", "correct-horse-battery")
    grant(user, env(catalog, "staging"), Role.APPROVER)
    return user


def break_glass_deployment(release, users, queues) -> Deployment:
    staging = env(release.application, "staging")
    FreezeWindow.objects.create(environment=staging, kind=FreezeKind.ONE_OFF, reason="Audit week",
                                starts_at=timezone.now() - timedelta(hours=1),
                                ends_at=timezone.now() + timedelta(hours=3))  # fmt: skip
    glass = FreezeOverride.request(staging, users["erin"], "INC-7 payments down",
                                   timedelta(hours=1))  # fmt: skip
    glass.approve(users["carol"])
    deployment = Deployment.request(release, staging, users["alice"], "INC-7 hotfix")
    assert deployment.emergency
    deployment.approve(users["bob"])
    work(queues)
    deployment.refresh_from_db()
    assert deployment.status == Status.SUCCEEDED
    return deployment


def test_a_break_glass_change_is_reviewed_by_someone_not_involved(
    release,
    users,
    queues,
    frank,
    api,  # noqa: F811
):
    deployment = break_glass_deployment(release, users, queues)
    assert Notification.objects.filter(event=NotificationEvent.EMERGENCY_REVIEW).exists()
    assert deployment.review_due_by == deployment.finished_at + timedelta(hours=48)
    cards = build_cards(card_environments([deployment.environment_id]))
    assert "review due" in cards[0].problems

    for who in ("alice", "bob", "carol", "erin"):  # requester, approver, break-glass pair
        with pytest.raises(Forbidden, match="took part"):
            deployment.review_emergency(users[who], "looks fine")
    with pytest.raises(Forbidden, match="Only approvers and admins"):
        deployment.review_emergency(users["dave"], "looks fine")
    with pytest.raises(PolicyError, match="Say what the review found"):
        deployment.review_emergency(frank, "  ")
    _, key = tokens.issue(frank, "review")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.post(reverse("api-deployment-emergency-review", args=[deployment.pk]),
                           {"comment": "Outage was real; hotfix matched the ticket."},
                           format="json")  # fmt: skip

    assert response.status_code == 200, response.json()
    assert response.json()["review"]["by"] == "frank"
    with pytest.raises(Conflict, match="already reviewed"):
        deployment.review_emergency(frank, "again")
    event = AuditEvent.objects.get(action="deployment.emergency_reviewed")
    assert event.actor_id == frank.pk and event.after["late"] is False
    pack = evidence.build_pack(Deployment.objects.get(pk=deployment.pk))
    assert pack["deployment"]["emergency"]["reviewed_by"]["username"] == "frank"
    glass = pack["deployment"]["freeze_override"]
    assert (glass["requested_by"]["username"], glass["decided_by"]["username"]) == ("erin", "carol")
    assert glass["reason"] == "INC-7 payments down" and glass["expires_at"]
    cards = build_cards(card_environments([deployment.environment_id]))
    assert "review due" not in cards[0].problems


def test_an_ordinary_change_needs_no_review(release, users, queues, frank):
    dev = env(release.application, "dev")
    deployment = Deployment.request(release, dev, users["alice"], "routine")
    work(queues)
    deployment.refresh_from_db()
    assert not deployment.emergency
    with pytest.raises(Conflict, match="not an emergency change"):
        deployment.review_emergency(frank, "n/a")


def test_the_api_takes_a_window_and_shows_it(release, api):  # noqa: F811
    opens = timezone.now() + timedelta(hours=6)
    response = api("alice").post(reverse("api-deployment-list"), {
        "release": release.pk, "environment": env(release.application, "staging").pk,
        "reason": "maintenance window", "not_before": opens.isoformat(),
        "not_after": (opens + timedelta(hours=2)).isoformat(),
    }, format="json")  # fmt: skip
    bad = api("alice").post(reverse("api-deployment-list"), {
        "release": release.pk, "environment": env(release.application, "production").pk,
        "reason": "typo", "not_after": "2020-01-01T00:00:00Z",
    }, format="json")  # fmt: skip

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["not_before"].startswith(opens.strftime("%Y-%m-%dT%H:%M"))
    assert body["emergency"] is False and body["review"] is None
    assert bad.status_code == 400 and "not_after" in bad.json()


def test_the_deployment_page_offers_the_review_to_who_may_give_it(
    client, release, users, queues, frank
):
    deployment = break_glass_deployment(release, users, queues)
    url = reverse("deployment-detail", args=[deployment.pk])
    client.force_login(users["bob"])
    assert "You took part in this change" in client.get(url).content.decode()

    client.force_login(frank)
    assert 'data-testid="emergency-review-form"' in client.get(url).content.decode()
    empty = client.post(reverse("deployment-emergency-review", args=[deployment.pk]),
                        {"comment": ""}, follow=True)  # fmt: skip
    assert "Comment: This field is required." in empty.content.decode()
    client.post(reverse("deployment-emergency-review", args=[deployment.pk]),
                {"comment": "Outage real, change as ticketed."})  # fmt: skip

    page = client.get(url).content.decode()
    assert "Reviewed by <strong>frank</strong>" in page
