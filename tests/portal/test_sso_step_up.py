"""Step-up through the identity provider before an approval that needs a
fresh MFA: a new OIDC round trip with prompt=login and max_age=0, the ID
token's amr/acr taken as the proof (a real provider, tests/oidc.py)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from deployments.models import Approval, Deployment
from portal.core import group_roles
from portal.core.choices import Role
from tests.conftest import env
from tests.environments.ui import last_event
from tests.oidc import oidc_provider  # noqa: F401 (fixture)
from tests.portal.test_sso import configure, sign_in


@pytest.fixture
def idp(settings, oidc_provider):  # noqa: F811
    configure(settings, oidc_provider)
    return oidc_provider


@pytest.fixture
def waiting(release, catalog, users):
    """A staging request that needs a fresh MFA; frank approves it through SSO."""
    staging = env(catalog, "staging")
    staging.approval_mfa_minutes = 15
    staging.save()
    group_roles.add_mapping("gantry-approvers", Role.APPROVER, environment=staging)
    return Deployment.request(release, staging, users["alice"], "ship it")


def step_up(client, idp, login: str, next_url: str):
    response = client.get(reverse("sso-step-up") + f"?next={next_url}")
    assert response.status_code == 302, response.content
    url = response["Location"]
    query = parse_qs(urlsplit(url).query)
    assert query["prompt"] == ["login"]
    assert query["max_age"] == ["0"]
    return client.get(idp.authorize(url, login))


def test_a_sign_in_without_a_second_factor_does_not_count(client, idp, waiting):
    idp.set_account("sub-frank", preferred_username="frank", groups=["gantry-approvers"])
    sign_in(client, idp, "sub-frank")
    assert client.session["gantry_authentication"]["method"] == "sso"
    assert client.session["gantry_authentication"]["detail"]["amr"] == ["pwd"]
    detail = reverse("deployment-detail", args=[waiting.pk])
    assert client.get(detail).context["step_up"] == "sso"
    response = step_up(client, idp, "sub-frank", detail)
    assert response.status_code == 403
    text = response.content.decode()
    assert "named no second factor (amr: pwd; acr: urn:gantry:test:pwd)" in text
    assert last_event("auth.sso_step_up_refused").actor_name == "frank"
    client.post(reverse("deployment-approve", args=[waiting.pk]))
    assert not Approval.objects.exists()


def test_a_step_up_with_mfa_lets_the_approval_count_and_records_amr(client, idp, waiting):
    idp.set_account("sub-frank", preferred_username="frank", groups=["gantry-approvers"])
    sign_in(client, idp, "sub-frank")
    idp.set_account("sub-frank", preferred_username="frank", groups=["gantry-approvers"],
                    mfa=True)  # fmt: skip
    detail = reverse("deployment-detail", args=[waiting.pk])
    response = step_up(client, idp, "sub-frank", detail)
    assert response.status_code == 302
    assert response["Location"] == detail
    session_auth = client.session["gantry_authentication"]
    assert session_auth["method"] == "sso_mfa"
    assert session_auth["detail"]["amr"] == ["pwd", "otp"]
    assert last_event("auth.sso_step_up").after["acr"] == "urn:gantry:test:mfa"
    assert client.get(detail).context["step_up"] == ""
    client.post(reverse("deployment-approve", args=[waiting.pk]), {"comment": "checked"})
    approval = Approval.objects.get()
    assert approval.auth_method == "sso_mfa"
    assert approval.auth_detail["amr"] == ["pwd", "otp"]
    assert approval.auth_detail["acr"] == "urn:gantry:test:mfa"
    assert "single sign-on with MFA" in client.get(detail).content.decode()


def test_a_step_up_answered_for_another_account_is_refused(client, idp, waiting):
    idp.set_account("sub-frank", preferred_username="frank", groups=["gantry-approvers"])
    idp.set_account("sub-grace", preferred_username="grace", mfa=True)
    sign_in(client, idp, "sub-frank")
    response = step_up(client, idp, "sub-grace", "/")
    assert response.status_code == 403
    assert "another account" in response.content.decode()
    assert client.session["gantry_authentication"]["method"] == "sso"


def test_an_sso_sign_in_with_mfa_counts_at_once(client, idp, waiting):
    idp.set_account("sub-frank", preferred_username="frank", groups=["gantry-approvers"],
                    mfa=True)  # fmt: skip
    sign_in(client, idp, "sub-frank")
    assert client.session["gantry_authentication"]["method"] == "sso_mfa"
    detail = reverse("deployment-detail", args=[waiting.pk])
    assert client.get(detail).context["step_up"] == ""
