"""`manage.py seed_demo`: the demo catalog, users and an audited history, loaded once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from deployments.choices import Status
from deployments.management.commands.seed_demo import DEMO_PASSWORD, image_ref
from deployments.models import IMAGE_REF_RE, Approval, Deployment, LogLine, Release, StepRun
from environments.choices import FreezeKind, StepKind
from environments.models import Application, Environment, FreezeWindow, Step
from environments.steps import validate_step_config
from portal.core.audit_chain import verify_chain
from portal.core.group_roles import sync_memberships
from portal.core.models import AuditEvent, GroupRoleMapping, Membership

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, int]:
    models = (User, Application, Environment, Step, FreezeWindow, Membership, GroupRoleMapping,
              Release, Deployment, Approval, StepRun, LogLine, AuditEvent)  # fmt: skip
    return {model.__name__: model.objects.count() for model in models}


def test_it_loads_the_fraud_detector_catalog_with_its_rules():
    assert "Demo data loaded" in seed()
    app = Application.objects.get(slug="fraud-detector")
    assert sorted(app.services.values_list("slug", flat=True)) == [
        "fraud-api", "fraud-ml", "fraud-worker",
    ]  # fmt: skip
    envs = {env.slug: env for env in app.environments.all()}
    assert [e.slug for e in app.environments.order_by("order")] == ["dev", "staging", "production"]
    assert [envs[s].required_approvals for s in ("dev", "staging", "production")] == [0, 1, 2]
    production = envs["production"]
    assert production.require_previous_success
    assert production.rollback_required_approvals == 1
    assert production.monthly_budget_usd == 185
    assert production.region == "ca-central-1"
    assert production.webhook_url == ""
    assert any(url.endswith("/health/ready") for url in production.health_urls)
    freeze = production.freeze_windows.get()
    assert (freeze.kind, freeze.start_weekday, freeze.end_weekday) == (FreezeKind.WEEKLY, 4, 0)
    assert freeze.time_zone == "America/Toronto"
    assert list(production.steps.values_list("kind", flat=True)) == [
        StepKind.TERRAFORM, StepKind.RDS_SNAPSHOT, StepKind.ECS_ROLLING,
        StepKind.HTTP_CHECK, StepKind.BAKE,
    ]  # fmt: skip
    ecs = production.steps.get(kind=StepKind.ECS_ROLLING)
    assert ecs.config["cluster"] == "fraud-detector-production"
    bake = production.steps.get(kind=StepKind.BAKE).config
    assert bake["duration_seconds"] == 60
    assert bake["cloudwatch"]["alarm_prefix"] == "fraud-detector-production-"


def test_it_writes_step_configs_the_runners_accept():
    seed()
    for step in Step.objects.all():
        validate_step_config(step.kind, step.config)  # raises ConfigError naming the key


def test_it_loads_the_kubernetes_platform_with_a_namespace_per_environment():
    seed()
    app = Application.objects.get(slug="fintech-ai-platform")
    rolling = Step.objects.filter(environment__application=app, kind=StepKind.K8S_ROLLING)
    assert sorted(step.config["namespace"] for step in rolling) == [
        "fintech-ai-dev", "fintech-ai-prod", "fintech-ai-staging",
    ]  # fmt: skip


def test_it_creates_the_demo_users_with_their_roles():
    seed()
    for name in ("alice", "bob", "carol", "dave", "admin"):
        assert User.objects.get(username=name).check_password(DEMO_PASSWORD)
    assert User.objects.get(username="admin").is_superuser
    envs = Environment.objects.count()
    for name, role in (("alice", "deployer"), ("bob", "approver"), ("carol", "approver"),
                       ("dave", "viewer")):  # fmt: skip
        assert Membership.objects.filter(user__username=name, role=role).count() == envs


def test_it_maps_the_demo_idp_groups_on_every_demo_environment():
    seed()
    mappings = GroupRoleMapping.objects.all()
    assert {(m.group, m.role) for m in mappings} == {
        ("gantry-deployers", "deployer"), ("gantry-approvers", "approver"),
        ("gantry-viewers", "viewer"),
    }  # fmt: skip
    assert AuditEvent.objects.filter(action="group_role_mapping.created").count() == len(mappings)
    # A user the IdP puts in the groups gets the roles in every demo environment.
    sso_user = User.objects.create_user("sso-user")
    sync_memberships(sso_user, ["gantry-deployers", "gantry-approvers"])
    envs = Environment.objects.count()
    assert Membership.objects.filter(user=sso_user, role="deployer").count() == envs
    assert Membership.objects.filter(user=sso_user, role="approver").count() == envs


def test_it_builds_the_history_through_the_domain_rules():
    seed()
    app = Application.objects.get(slug="fraud-detector")
    succeeded = Deployment.objects.filter(release__application=app, status=Status.SUCCEEDED)
    assert {(d.release.version, d.environment.slug) for d in succeeded} >= {
        ("1.4.0", "dev"), ("1.4.0", "staging"), ("1.3.0", "production"),
    }  # fmt: skip
    # The open production request has Terraform steps: it waits for the
    # worker to plan it, and approvals wait for the plan.
    waiting = Deployment.objects.get(release__application=app, status=Status.PLANNING)
    assert (waiting.release.version, waiting.environment.slug) == ("1.4.0", "production")
    assert waiting.required_approvals == 2
    assert not waiting.approvals.exists()
    done = succeeded.first()
    assert done.started_at and done.finished_at


def test_it_pins_images_by_a_deterministic_digest():
    seed()
    release = Release.objects.get(application__slug="fraud-detector", version="1.4.0")
    refs = release.artifact_map()
    assert refs["fraud-api"] == image_ref(
        "123456789012.dkr.ecr.ca-central-1.amazonaws.com", "fraud-api", "1.4.0"
    )
    assert all(IMAGE_REF_RE.match(ref) for ref in refs.values())
    assert refs["fraud-api"] != refs["fraud-ml"]


def test_it_audits_every_step_with_its_actor_and_keeps_the_chain_valid():
    seed()
    staging = Deployment.objects.get(
        release__application__slug="fraud-detector", release__version="1.3.0",
        environment__slug="staging",
    )  # fmt: skip
    events = AuditEvent.objects.filter(target_type="deployments.deployment",
                                       target_id=str(staging.pk)).order_by("seq")  # fmt: skip
    assert [(e.action, e.actor_name) for e in events] == [
        ("deployment.requested", "alice"),
        ("deployment.approved", "bob"),
        ("deployment.queued", "bob"),
        ("deployment.started", "system"),
        ("deployment.succeeded", "system"),
    ]
    assert AuditEvent.objects.filter(action="release.registered", actor_name="alice").count() == 5
    assert verify_chain().ok


def test_it_changes_nothing_when_run_again():
    seed()
    before = snapshot()
    last_seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    assert "nothing changed" in seed()
    assert snapshot() == before
    assert AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() == last_seq


def test_it_keeps_a_password_someone_changed():
    seed()
    bob = User.objects.get(username="bob")
    bob.set_password("a-new-long-passphrase")
    bob.save()
    seed()
    bob.refresh_from_db()
    assert bob.check_password("a-new-long-passphrase")


def test_it_turns_the_identity_rules_on_for_production_only():
    seed()
    for app in Application.objects.all():
        envs = {env.slug: env for env in app.environments.all()}
        assert envs["production"].implementers_may_not_approve
        assert envs["production"].approval_mfa_minutes == 15
        assert not envs["staging"].implementers_may_not_approve
        assert envs["staging"].approval_mfa_minutes is None
    event = AuditEvent.objects.filter(action="environment.policy_changed").latest("seq")
    assert event.after["approval_mfa_minutes"] == 15
    assert event.actor_name == "admin"
