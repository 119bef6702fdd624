"""Waiting for me: the approvals inbox, its navigation badge and the API's
`?awaiting=me`, each following the same rules as the decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deployments import inbox
from deployments.models import Deployment, Release
from environments.models import FreezeOverride
from tests.api.conftest import api, request_deployment  # noqa: F401
from tests.conftest import env, image

pytestmark = pytest.mark.django_db


@pytest.fixture
def later(release, users):
    """A second release, requested for staging after the first."""
    artifacts = {s: image(s, "b") for s in ("fraud-api", "fraud-ml", "fraud-worker")}
    return Release.register(release.application, "1.5.0", artifacts, users["alice"])


def test_it_lists_what_each_person_may_decide_now(users, release, later):
    staging_env = env(release.application, "staging")
    staging_env.required_approvals = 2  # bob's approval leaves it waiting for carol
    staging_env.save()
    staging = request_deployment(release, users, "staging")
    second = request_deployment(later, users, "staging")
    glass = FreezeOverride.request(env(release.application, "production"), users["erin"],
                                   "INC-9", timedelta(hours=1))  # fmt: skip

    assert [d.pk for d in inbox.deployments_awaiting(users["bob"])] == [staging.pk, second.pk]
    assert inbox.deployments_awaiting(users["alice"]) == []  # she asked for them
    assert inbox.deployments_awaiting(users["dave"]) == []  # a viewer
    second.approve(users["bob"])
    assert [d.pk for d in inbox.deployments_awaiting(users["bob"])] == [staging.pk]
    assert [d.pk for d in inbox.deployments_awaiting(users["carol"])] == [staging.pk, second.pk]
    assert inbox.overrides_awaiting(users["bob"]) == [glass]
    assert inbox.overrides_awaiting(users["erin"]) == []  # a second person decides
    assert inbox.count(users["carol"]) == 3


def test_the_page_and_the_badge_show_them(client, users, release):
    deployment = request_deployment(release, users, "staging")
    client.force_login(users["bob"])

    page = client.get(reverse("approvals-inbox"))
    badge = client.get(reverse("approvals-count"))
    client.force_login(users["alice"])
    none = client.get(reverse("approvals-count"))
    empty = client.get(reverse("approvals-inbox"))

    assert f'href="/deployments/{deployment.pk}/"' in page.content.decode()
    assert 'data-testid="approvals-count"' in badge.content.decode() and ">1<" in (
        badge.content.decode()
    )
    assert none.content.decode().strip() == ""
    assert "Nothing waits for your approval." in empty.content.decode()


def test_the_api_filters_awaiting_me_oldest_first(api, users, release, later):  # noqa: F811
    staging = request_deployment(release, users, "staging")
    second = request_deployment(later, users, "staging")
    url = reverse("api-deployment-list")

    mine = api("bob").get(url, {"awaiting": "me"}).json()["results"]
    theirs = api("alice").get(url, {"awaiting": "me"}).json()["results"]
    bad = api("bob").get(url, {"awaiting": "you"})

    assert [d["id"] for d in mine] == [staging.pk, second.pk]
    assert theirs == []
    assert bad.status_code == 400 and "awaiting" in bad.json()


def test_the_badge_reads_the_same_queries_however_many_wait(client, users, release, later):
    """The navigation badge is fetched on every page: its queries do not grow
    with the requests waiting (images and one's own decisions are read with them)."""
    client.force_login(users["bob"])
    request_deployment(release, users, "staging")
    with CaptureQueriesContext(connection) as one:
        assert client.get(reverse("approvals-count")).status_code == 200
    for version in ("1.6.0", "1.7.0"):
        artifacts = {s: image(s, "c") for s in ("fraud-api", "fraud-ml", "fraud-worker")}
        more = Release.register(release.application, version, artifacts, users["alice"])
        request_deployment(more, users, "staging")
    request_deployment(later, users, "staging")
    with CaptureQueriesContext(connection) as four:
        response = client.get(reverse("approvals-count"))
    assert ">4</span>" in response.content.decode()
    assert len(four) == len(one)


def test_the_badge_reads_the_visible_environments_once(client, users, release):
    """Who may decide where is read once per badge, for deployments and
    break-glass requests alike: one query of the member's roles, none of the
    environments themselves."""
    client.force_login(users["bob"])
    request_deployment(release, users, "staging")
    with CaptureQueriesContext(connection) as badge:
        assert client.get(reverse("approvals-count")).status_code == 200
    tables = [q["sql"].split(" FROM ", 1)[1].split()[0] for q in badge.captured_queries
              if q["sql"].startswith("SELECT")]  # fmt: skip
    assert tables.count('"portal_membership"') == 1
    assert '"environments_environment"' not in tables


def test_a_superuser_decides_break_glass_everywhere_but_approves_only_as_a_member(users, release):
    """A superuser is an admin of every environment: every pending break-glass
    request but their own waits for them, whatever environment it is in, and
    no deployment does without an approver's membership."""
    root = User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")
    request_deployment(release, users, "staging")
    production, staging = (
        env(release.application, "production"),
        env(release.application, "staging"),
    )
    theirs = FreezeOverride.request(production, users["erin"], "INC-9", timedelta(hours=1))
    elsewhere = FreezeOverride.request(staging, users["erin"], "INC-10", timedelta(hours=1))
    decided = FreezeOverride.request(production, users["erin"], "INC-11", timedelta(hours=1))
    decided.reject(users["bob"])
    own = FreezeOverride.request(staging, root, "INC-12", timedelta(hours=1))

    assert inbox.overrides_awaiting(root) == [theirs, elsewhere]
    assert own in inbox.overrides_awaiting(users["bob"])  # bob, an approver there, decides it
    assert inbox.deployments_awaiting(root) == []
    assert inbox.count(root) == 2


def test_a_decision_on_an_older_plan_puts_it_back_in_the_inbox(client, users, release):
    """Approve, the plan changes (a replan after another run applied), approve
    again: the deployment leaves, comes back, and leaves the approver's inbox
    and badge, each time read from what would ship now."""
    staging_env = env(release.application, "staging")
    staging_env.required_approvals = 2  # one approval leaves it waiting
    staging_env.save()
    deployment = request_deployment(release, users, "staging")
    client.force_login(users["bob"])

    def bob_sees() -> tuple[list[int], bool]:
        badge = client.get(reverse("approvals-count")).content.decode()
        return [d.pk for d in inbox.deployments_awaiting(users["bob"])], ">1</span>" in badge

    assert bob_sees() == ([deployment.pk], True)
    deployment.approve(users["bob"])
    assert bob_sees() == ([], False)
    assert bob_sees() == ([], False)  # a reload reads the same
    Deployment.objects.filter(pk=deployment.pk).update(plan_sha256="f" * 64)
    assert bob_sees() == ([deployment.pk], True)
    Deployment.objects.get(pk=deployment.pk).approve(users["bob"], "new plan reviewed")
    assert bob_sees() == ([], False)
    assert [d.pk for d in inbox.deployments_awaiting(users["carol"])] == [deployment.pk]
