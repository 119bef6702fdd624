"""Identity rules on approvals: implementers may not approve (separation of
duties, refused by the model, the pages, the API and the database), and a
fresh strong authentication before an approval counts (step-up)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.choices import Status
from deployments.evidence import build_pack
from deployments.models import Approval, Deployment, Release
from environments.models import Environment
from portal.core import tokens
from portal.core.mfa import Authentication, StepUpRequired
from portal.core.roles import Forbidden
from tests.api.conftest import api  # noqa: F401 (fixture)
from tests.conftest import env, grant, image
from tests.environments.ui import browser, last_event, messages_of
from tests.mfa import fresh_code

ARTIFACTS = {s: image(s) for s in ("fraud-api", "fraud-ml", "fraud-worker")}


def now_totp() -> Authentication:
    return Authentication("totp", timezone.now())


@pytest.fixture
def staging(catalog) -> Environment:
    staging = env(catalog, "staging")
    staging.implementers_may_not_approve = True
    staging.save()
    return staging


def register(catalog, users, who="alice", version="2.0.0", author=""):
    return Release.register(
        catalog, version, ARTIFACTS, users[who], commit="abc1234", commit_author=author
    )


def test_the_registrant_may_not_approve(catalog, users, staging):
    grant(users["bob"], staging, "deployer")
    release = register(catalog, users, who="bob")
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    with pytest.raises(Forbidden, match="You registered 2.0.0"):
        deployment.approve(users["bob"])
    deployment.approve(users["carol"])
    deployment.refresh_from_db()
    assert deployment.status == Status.QUEUED


@pytest.mark.parametrize(
    "author", ["Carol Jones <CAROL@example.com>", "carol@example.com", "Carol"]
)
def test_the_commit_author_may_not_approve(catalog, users, staging, author):
    release = register(catalog, users, author=author)
    assert release.commit_author_user == users["carol"]
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    with pytest.raises(Forbidden, match="You wrote commit abc1234"):
        deployment.approve(users["carol"])
    with pytest.raises(Forbidden, match="You wrote commit"):
        deployment.reject(users["carol"], "no")


def test_an_author_naming_nobody_or_two_people_maps_to_no_user(catalog, users, staging):
    users["dave"].email = "carol@example.com"  # two accounts share the address
    users["dave"].save()
    assert register(catalog, users, author="carol@example.com").commit_author_user is None
    assert (
        register(catalog, users, version="2.0.1", author="Zed <z@x.io>").commit_author_user is None
    )


def test_without_the_rule_implementers_may_approve(catalog, users):
    production = env(catalog, "staging")
    grant(users["bob"], production, "deployer")
    release = register(catalog, users, who="bob")
    deployment = Deployment.request(release, production, users["alice"], "ship it")
    approval = deployment.approve(users["bob"])
    assert "registrant_may_not_approve" not in approval.rules


def test_the_database_refuses_an_implementer_approval(catalog, users, staging):
    release = register(catalog, users, author="carol@example.com")
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    for user in (users["alice"], users["carol"]):  # requester and registrant; commit author
        with pytest.raises(IntegrityError, match="may not decide"), transaction.atomic():
            Approval.objects.create(
                deployment=deployment,
                user=user,
                decision="approve",
                digest=deployment.approval_digest(),
            )
    with connection.cursor() as cursor, pytest.raises(IntegrityError), transaction.atomic():
        cursor.execute(
            "INSERT INTO deployments_approval (deployment_id, user_id, decision, comment, digest,"
            " created_at, auth_method, auth_detail, rules) VALUES (%s, %s, 'approve', '', 'x',"
            " now(), '', '{}', '[]')",
            [deployment.pk, users["carol"].pk],
        )
    Approval.objects.create(
        deployment=deployment,
        user=users["bob"],
        decision="approve",
        digest=deployment.approval_digest(),
    )


def test_the_page_says_why_the_registrant_cannot_approve(catalog, users, staging):
    grant(users["bob"], staging, "deployer")
    release = register(catalog, users, who="bob")
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    page = browser(users["bob"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert page.context["refusal"].startswith("You registered 2.0.0")
    assert 'data-testid="decision-form"' not in page.content.decode()
    response = browser(users["bob"]).post(reverse("deployment-approve", args=[deployment.pk]))
    assert response.status_code == 403


def test_the_api_refuses_the_commit_author(catalog, users, staging):
    release = register(catalog, users, author="carol")
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    _, key = tokens.issue(users["carol"], "ci")
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post(f"/api/v1/deployments/{deployment.pk}/approve/", {}, format="json")
    assert response.status_code == 403
    assert "You wrote commit abc1234" in response.json()["detail"]


def test_the_evidence_pack_lists_the_rules_applied(catalog, users, staging):
    release = register(catalog, users, author="Carol <carol@example.com>")
    deployment = Deployment.request(release, staging, users["alice"], "ship it")
    deployment.approve(users["bob"], authentication=now_totp())
    pack = build_pack(deployment)
    rules = [r["rule"] for r in pack["policy"]["rules_applied"]]
    assert rules == [
        "requester_may_not_approve",
        "approver_role",
        "registrant_may_not_approve",
        "commit_author_may_not_approve",
    ]
    assert pack["policy"]["implementers"] == {
        "registered_by": "alice",
        "commit_author": "Carol <carol@example.com>",
        "commit_author_user": "carol",
    }
    [approval] = pack["approvals"]
    assert approval["authentication"]["method"] == "totp"
    assert approval["authentication"]["strong"] is True
    html = browser(users["dave"]).get(reverse("deployment-evidence-html", args=[deployment.pk]))
    assert "The author of the release&#x27;s commit may not approve." in html.content.decode()


# -- the commit author at registration ----------------------------------------------------


def test_the_api_registers_a_commit_author(api, catalog, users):
    body = {
        "application": "fraud-detector",
        "version": "3.0.0",
        "artifacts": ARTIFACTS,
        "commit": "def5678",
        "commit_author": "Bob <bob@example.com>",
    }
    response = api("alice").post("/api/v1/releases/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["commit_author"] == "Bob <bob@example.com>"
    release = Release.objects.get(version="3.0.0")
    assert release.commit_author_user == users["bob"]
    assert last_event("release.registered").after["commit_author_user"] == "bob"


def test_a_commit_author_needs_a_commit(api, catalog):
    body = {
        "application": "fraud-detector",
        "version": "3.0.0",
        "artifacts": ARTIFACTS,
        "commit_author": "bob",
    }
    response = api("alice").post("/api/v1/releases/", body, format="json")
    assert response.status_code == 400
    assert response.json()["commit"] == ["Name the commit the author wrote."]


def test_the_form_and_the_command_take_a_commit_author(catalog, users):
    data = {
        "version": "3.1.0",
        "commit": "def5678",
        "commit_author": "carol",
        "notes": "",
        **{f"artifact_{s}": ref for s, ref in ARTIFACTS.items()},
    }
    response = browser(users["alice"]).post(reverse("release-new", args=["fraud-detector"]), data)
    assert response.status_code == 302
    assert Release.objects.get(version="3.1.0").commit_author_user == users["carol"]
    out = StringIO()
    call_command(
        "register_release",
        "fraud-detector",
        "3.2.0",
        "--user",
        "alice",
        "--commit",
        "def5678",
        "--commit-author",
        "Bob <bob@example.com>",
        *[f"--artifact={s}={ref}" for s, ref in ARTIFACTS.items()],
        stdout=out,
    )
    release = Release.objects.get(pk=int(out.getvalue()))
    assert (release.commit_author, release.commit_author_user) == (
        "Bob <bob@example.com>",
        users["bob"],
    )
    page = browser(users["dave"]).get(reverse("release-detail", args=[release.pk]))
    assert "(Gantry user bob)" in page.content.decode()


# -- fresh MFA before an approval counts -------------------------------------------------


@pytest.fixture
def mfa_staging(catalog) -> Environment:
    staging = env(catalog, "staging")
    staging.approval_mfa_minutes = 15
    staging.save()
    return staging


def test_an_approval_needs_a_fresh_strong_authentication(release, users, mfa_staging):
    deployment = Deployment.request(release, mfa_staging, users["alice"], "ship it")
    stale = Authentication("totp", timezone.now() - timedelta(minutes=16))
    for authentication in (None, Authentication("password", timezone.now()), stale):
        with pytest.raises(StepUpRequired, match="at most 15 minutes old"):
            deployment.approve(users["bob"], authentication=authentication)
    assert not Approval.objects.exists()
    at = timezone.now() - timedelta(minutes=14)
    approval = deployment.approve(users["bob"], authentication=Authentication("totp", at))
    assert (approval.auth_method, approval.authenticated_at) == ("totp", at)
    assert "fresh_mfa_within_minutes:15" in approval.rules
    event = last_event("deployment.approved")
    assert event.after["authentication"]["method"] == "totp"


def test_the_api_refuses_a_token_approval_with_a_clear_403(api, release, users, mfa_staging):
    deployment = Deployment.request(release, mfa_staging, users["alice"], "ship it")
    response = api("bob").post(f"/api/v1/deployments/{deployment.pk}/approve/", {}, format="json")
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "which an API token cannot prove. Approve in the browser" in detail
    assert f"/deployments/{deployment.pk}/" in detail
    assert not Approval.objects.exists()


def test_the_page_asks_to_step_up_then_approves(release, users, mfa_staging):
    from tests.portal.test_mfa_views import enrol

    bob = users["bob"]
    client = browser(bob)
    deployment = Deployment.request(release, mfa_staging, users["alice"], "ship it")
    detail = reverse("deployment-detail", args=[deployment.pk])
    page = client.get(detail)
    assert page.context["step_up"] == "enrol"
    enrol(client, bob)  # enrolment itself is a fresh strong authentication
    assert client.get(detail).context["step_up"] == ""
    # Time passes: the authentication goes stale.
    session = client.session
    session["gantry_authentication"]["at"] -= 16 * 60
    session.save()
    page = client.get(detail)
    assert page.context["step_up"] == "totp"
    assert "Confirm with your authenticator" in page.content.decode()
    response = client.post(
        reverse("deployment-approve", args=[deployment.pk]), {"comment": "ok"}, follow=True
    )
    assert any("at most 15 minutes old" in m for m in messages_of(response))
    assert not Approval.objects.exists()
    client.post(
        reverse("mfa-verify") + f"?next={detail}", {"code": fresh_code(bob), "next": detail}
    )
    client.post(reverse("deployment-approve", args=[deployment.pk]), {"comment": "ok"})
    approval = Approval.objects.get()
    assert approval.auth_method == "totp"
    shown = client.get(detail).content.decode()
    assert "Authenticated by password + authenticator code (TOTP)" in shown
    body = APIClient()
    body.force_authenticate(users["dave"])
    api_approval = body.get(f"/api/v1/deployments/{deployment.pk}/").json()["approvals"][0]
    assert api_approval["authentication"]["method"] == "totp"
    assert api_approval["authentication"]["strong"] is True
    assert "fresh_mfa_within_minutes:15" in api_approval["rules"]
