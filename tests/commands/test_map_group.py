"""manage.py map_group GROUP ROLE [--application SLUG] [--environment SLUG] [--remove]"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from environments.models import Application, Environment
from portal.core.models import AuditEvent, GroupRoleMapping, Membership, SsoIdentity


def run(*args: str) -> str:
    out = StringIO()
    call_command("map_group", *args, stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def second_app(catalog) -> Application:
    app = Application.objects.create(slug="fintech-ai-platform", name="FinTech AI")
    Environment.objects.create(application=app, slug="dev", name="Dev", order=1)
    return app


def test_it_maps_a_group_on_every_environment(catalog):
    assert run("gantry-viewers", "viewer") == "Mapped gantry-viewers → viewer on all environments."
    mapping = GroupRoleMapping.objects.get()
    assert (mapping.group, mapping.role, mapping.application, mapping.environment) == (
        "gantry-viewers", "viewer", None, None,
    )  # fmt: skip
    event = AuditEvent.objects.get(action="group_role_mapping.created")
    assert event.after == {"group": "gantry-viewers", "role": "viewer", "scope": "all environments"}
    assert event.actor_name == "system"


def test_it_maps_a_group_on_one_application(catalog, second_app):
    out = run("ml-team", "deployer", "--application", "fintech-ai-platform")
    assert out == "Mapped ml-team → deployer on application fintech-ai-platform."
    assert GroupRoleMapping.objects.get().application == second_app


def test_it_maps_a_group_on_one_environment(catalog):
    out = run("risk", "approver", "--environment", "production")
    assert out == "Mapped risk → approver on environment fraud-detector/production."
    assert GroupRoleMapping.objects.get().environment == catalog.environments.get(slug="production")


def test_it_asks_which_application_when_an_environment_slug_is_ambiguous(catalog, second_app):
    with pytest.raises(CommandError, match="exists in several applications"):
        run("risk", "approver", "--environment", "dev")
    run("risk", "approver", "--environment", "dev", "--application", "fintech-ai-platform")
    assert GroupRoleMapping.objects.get().environment.application == second_app


def test_it_is_idempotent(catalog):
    run("risk", "approver", "--application", "fraud-detector")
    assert run("risk", "approver", "--application", "fraud-detector") == (
        "Already mapped: risk → approver on application fraud-detector."
    )
    assert GroupRoleMapping.objects.count() == 1
    assert AuditEvent.objects.filter(action="group_role_mapping.created").count() == 1


BAD_INPUT = [
    (["risk", "superuser"], "Unknown role 'superuser': use one of viewer, deployer, approver"),
    (["risk", "approver", "--application", "nope"], "No application 'nope' (known: fraud-"),
    (["risk", "approver", "--environment", "nope"], "No environment 'nope'."),
    (["risk", "approver", "--application", "fraud-detector", "--environment", "qa"],
     "No environment 'qa' in fraud-detector."),
    (["  ", "viewer"], "GROUP: give 1 to 255 characters."),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_it_refuses_bad_input_with_a_clear_error(catalog, args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args)
    assert not GroupRoleMapping.objects.exists()
    assert not AuditEvent.objects.filter(action="group_role_mapping.created").exists()


def test_it_grants_known_members_now_and_removes_the_mapping(catalog, users):
    SsoIdentity.objects.create(user=users["mallory"], issuer="https://idp", subject="m",
                               groups=["risk"])  # fmt: skip
    run("risk", "approver", "--environment", "production")
    held = Membership.objects.filter(user=users["mallory"])
    assert list(held.values_list("environment__slug", "role", "via_group")) == [
        ("production", "approver", "risk")
    ]
    out = run("risk", "approver", "--environment", "production", "--remove")
    assert out == "Removed risk → approver on environment fraud-detector/production."
    assert not held.exists()
    assert not GroupRoleMapping.objects.exists()
    assert AuditEvent.objects.filter(action="membership.revoked").count() == 1
    assert (
        run("risk", "approver", "--remove")
        == "No mapping of risk to approver there; nothing removed."
    )
