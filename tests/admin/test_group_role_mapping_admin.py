"""Group role mappings in the admin: audited, and the group's known members
get or lose the role at once. SSO identities: read-only, no tokens shown."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.core.choices import Role
from portal.core.group_roles import sync_memberships
from portal.core.models import AuditEvent, GroupRoleMapping, Membership, SsoIdentity
from tests.conftest import env


@pytest.fixture
def risk_member(users) -> SsoIdentity:
    return SsoIdentity.objects.create(user=users["mallory"], issuer="https://idp", subject="m",
                                      groups=["risk"], refresh_token="rt-secret-value")  # fmt: skip


def test_it_adds_a_mapping_and_grants_the_members_at_once(admin_client, catalog, risk_member):
    production = env(catalog, "production")
    response = admin_client.post(reverse("admin:portal_grouprolemapping_add"),
                                 {"group": "risk", "role": Role.APPROVER,
                                  "environment": str(production.pk)})  # fmt: skip
    assert response.status_code == 302
    assert GroupRoleMapping.objects.get().environment == production
    row = Membership.objects.get(user=risk_member.user)
    assert (row.environment, row.role, row.via_group) == (production, "approver", "risk")
    created = AuditEvent.objects.get(action="admin.grouprolemapping.created")
    assert created.after["group"] == "risk" and created.actor_name == "root"
    assert AuditEvent.objects.get(action="membership.granted").after["via"] == "risk"


def test_it_refuses_a_mapping_on_an_application_and_an_environment(admin_client, catalog):
    response = admin_client.post(reverse("admin:portal_grouprolemapping_add"),
                                 {"group": "risk", "role": Role.APPROVER,
                                  "application": str(catalog.pk),
                                  "environment": str(env(catalog, "dev").pk)})  # fmt: skip
    assert response.status_code == 200
    assert "Map a group on one application or one environment, not both." in (
        response.content.decode()
    )
    assert not GroupRoleMapping.objects.exists()


def test_deleting_a_mapping_withdraws_what_it_granted(admin_client, catalog, risk_member):
    mapping = GroupRoleMapping.objects.create(group="risk", role=Role.VIEWER, application=catalog)
    sync_memberships(risk_member.user, risk_member.groups)
    assert Membership.objects.filter(user=risk_member.user).count() == 3
    url = reverse("admin:portal_grouprolemapping_delete", args=[mapping.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Membership.objects.filter(user=risk_member.user).exists()
    assert AuditEvent.objects.filter(action="membership.revoked").count() == 3
    assert AuditEvent.objects.filter(action="admin.grouprolemapping.deleted").count() == 1


def test_it_lists_sso_identities_without_their_tokens(admin_client, risk_member):
    url = reverse("admin:portal_ssoidentity_change", args=[risk_member.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    text = response.content.decode()
    assert "mallory" in text and "risk" in text
    assert "rt-secret-value" not in text
    add = admin_client.get(reverse("admin:portal_ssoidentity_add"))
    assert add.status_code == 403
