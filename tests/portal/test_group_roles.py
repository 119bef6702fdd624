"""Roles from IdP groups: the mappings and the sync of memberships (no IdP
needed: the groups are given as the provider would give them)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from environments.models import Application, Environment
from portal.core import group_roles
from portal.core.choices import Role
from portal.core.group_roles import map_group, resync_members_of, sync_memberships, unmap_group
from portal.core.models import AuditEvent, GroupRoleMapping, Membership, SsoIdentity


@pytest.fixture
def platform(catalog) -> Application:
    """A second application, so that scopes have something to leave out."""
    app = Application.objects.create(slug="fintech-ai-platform", name="FinTech AI")
    for order, slug in enumerate(("dev", "production"), start=1):
        Environment.objects.create(application=app, slug=slug, name=slug, order=order)
    return app


def derived(user) -> set[tuple[str, str, str, str]]:
    return set(
        Membership.objects.filter(user=user)
        .exclude(via_group="")
        .values_list("environment__application__slug", "environment__slug", "role", "via_group")
    )


def test_it_grants_a_mapping_on_all_environments(users, platform):
    group_roles.add_mapping("gantry-viewers", Role.VIEWER)
    changes = sync_memberships(users["mallory"], ["gantry-viewers"])
    assert len(changes) == 5
    assert {(app, env) for app, env, _, _ in derived(users["mallory"])} == {
        ("fraud-detector", "dev"), ("fraud-detector", "staging"), ("fraud-detector", "production"),
        ("fintech-ai-platform", "dev"), ("fintech-ai-platform", "production"),
    }  # fmt: skip


def test_it_grants_an_application_mapping_on_its_environments_only(users, platform, catalog):
    group_roles.add_mapping("ml-team", Role.DEPLOYER, application=platform)
    sync_memberships(users["mallory"], ["ml-team"])
    assert derived(users["mallory"]) == {
        ("fintech-ai-platform", "dev", "deployer", "ml-team"),
        ("fintech-ai-platform", "production", "deployer", "ml-team"),
    }


def test_it_grants_an_environment_mapping_on_that_environment_only(users, platform, catalog):
    production = catalog.environments.get(slug="production")
    group_roles.add_mapping("risk", Role.APPROVER, environment=production)
    sync_memberships(users["mallory"], ["risk", "not-mapped"])
    assert derived(users["mallory"]) == {("fraud-detector", "production", "approver", "risk")}


def test_it_audits_grants_and_losses_with_the_group(users, catalog):
    group_roles.add_mapping("risk", Role.APPROVER, application=catalog)
    sync_memberships(users["mallory"], ["risk"])
    granted = AuditEvent.objects.filter(action="membership.granted").order_by("seq")
    assert [e.after["via"] for e in granted] == ["risk"] * 3
    assert {e.environment_id for e in granted} == set(
        catalog.environments.values_list("pk", flat=True)
    )
    sync_memberships(users["mallory"], [])
    revoked = AuditEvent.objects.filter(action="membership.revoked")
    assert sorted(e.before["environment"] for e in revoked) == [
        "fraud-detector/dev", "fraud-detector/production", "fraud-detector/staging",
    ]  # fmt: skip
    assert all(e.before["via"] == "risk" and e.before["user"] == "mallory" for e in revoked)
    assert derived(users["mallory"]) == set()


def test_it_is_idempotent(users, catalog):
    group_roles.add_mapping("risk", Role.APPROVER, application=catalog)
    assert sync_memberships(users["mallory"], ["risk"])
    events = AuditEvent.objects.count()
    assert sync_memberships(users["mallory"], ["risk"]) == []
    assert AuditEvent.objects.count() == events


def test_it_never_touches_roles_granted_by_hand(users, catalog):
    """alice is deployer everywhere by hand (conftest); a group must not take it away."""
    group_roles.add_mapping("deployers", Role.DEPLOYER, application=catalog)
    sync_memberships(users["alice"], ["deployers"])
    assert derived(users["alice"]) == set()  # she already holds it: nothing derived
    sync_memberships(users["alice"], [])
    assert Membership.objects.filter(user=users["alice"], role=Role.DEPLOYER).count() == 3
    assert not AuditEvent.objects.filter(action="membership.revoked").exists()


def test_it_keeps_a_role_another_group_still_grants(users, catalog):
    group_roles.add_mapping("a-team", Role.VIEWER, application=catalog)
    group_roles.add_mapping("b-team", Role.VIEWER)
    sync_memberships(users["mallory"], ["a-team", "b-team"])
    assert {via for *_, via in derived(users["mallory"])} == {"a-team"}
    sync_memberships(users["mallory"], ["b-team"])
    assert {via for *_, via in derived(users["mallory"])} == {"b-team"}
    changed = AuditEvent.objects.filter(action="membership.changed")
    assert changed.count() == 3
    assert {(e.before["via"], e.after["via"]) for e in changed} == {("a-team", "b-team")}
    assert not AuditEvent.objects.filter(action="membership.revoked").exists()


def test_it_refuses_a_mapping_with_two_scopes(catalog):
    production = catalog.environments.get(slug="production")
    with pytest.raises(IntegrityError), transaction.atomic():
        GroupRoleMapping.objects.create(
            group="g", role=Role.VIEWER, application=catalog, environment=production
        )


def test_it_keeps_one_mapping_per_group_role_and_scope(catalog):
    assert group_roles.add_mapping("g", Role.VIEWER)[1]
    assert not group_roles.add_mapping("g", Role.VIEWER)[1]
    assert group_roles.add_mapping("g", Role.VIEWER, application=catalog)[1]
    assert not group_roles.add_mapping("g", Role.VIEWER, application=catalog)[1]
    with pytest.raises(IntegrityError), transaction.atomic():
        GroupRoleMapping.objects.create(group="g", role=Role.VIEWER)
    assert AuditEvent.objects.filter(action="group_role_mapping.created").count() == 2


def test_mapping_a_group_grants_its_known_members_at_once(users, catalog):
    SsoIdentity.objects.create(user=users["mallory"], issuer="https://idp", subject="m",
                               groups=["risk"])  # fmt: skip
    SsoIdentity.objects.create(user=users["dave"], issuer="https://idp", subject="d",
                               groups=["other"], )  # fmt: skip
    mapping, created = map_group("risk", Role.APPROVER, application=catalog)
    assert created
    assert len(derived(users["mallory"])) == 3
    assert derived(users["dave"]) == set()
    unmap_group(mapping)
    assert derived(users["mallory"]) == set()
    assert AuditEvent.objects.filter(action="group_role_mapping.deleted").count() == 1
    assert AuditEvent.objects.filter(action="membership.revoked").count() == 3


def test_resync_withdraws_roles_of_a_withdrawn_identity(users, catalog):
    identity = SsoIdentity.objects.create(user=users["mallory"], issuer="https://idp",
                                          subject="m", groups=["risk"])  # fmt: skip
    map_group("risk", Role.APPROVER, application=catalog)
    identity.withdrawn_at = identity.checked_at
    identity.save()
    assert resync_members_of("risk") == 1
    assert derived(users["mallory"]) == set()
