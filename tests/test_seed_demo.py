"""`manage.py seed_demo`: the demo catalog, users and eight weeks of audited
history, loaded once; what runs in production priced from the recorded plan."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Kind, Status
from deployments.demo import HISTORY_WEEKS, image_ref
from deployments.management.commands.seed_demo import DEMO_PASSWORD, recorded_plan_cost
from deployments.metrics import delivery_metrics
from deployments.models import (
    IMAGE_REF_RE,
    Approval,
    CostEstimate,
    Deployment,
    LogLine,
    Release,
    StepRun,
    current_estimates,
)
from environments.choices import FreezeKind, StepKind
from environments.models import Application, Environment, FreezeWindow, Step
from environments.steps import validate_step_config
from portal.core import audit
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
              Release, Deployment, Approval, StepRun, LogLine, CostEstimate,
              AuditEvent)  # fmt: skip
    return {model.__name__: model.objects.count() for model in models}


def production(application: str = "fraud-detector") -> Environment:
    return Environment.objects.get(application__slug=application, slug="production")


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
    # 1.3.0 to 1.5.0 (nine releases) and the platform's 2.0.0 to 2.2.0 (four).
    assert AuditEvent.objects.filter(action="release.registered", actor_name="alice").count() == 13
    assert verify_chain().ok


def test_it_spreads_the_history_over_eight_weeks():
    seed()
    now = timezone.now()
    first = Release.objects.order_by("created_at").first()
    assert (first.application.slug, first.version) == ("fraud-detector", "1.3.0")
    # Day 0 is the Monday HISTORY_WEEKS weeks before this week's.
    assert timedelta(weeks=HISTORY_WEEKS - 1) < now - first.created_at < timedelta(weeks=9)
    finished = Deployment.objects.filter(finished_at__isnull=False)
    # Deployments finished in every week of the history, none in the future.
    weeks = {d.finished_at.isocalendar()[:2] for d in finished}
    assert len(weeks) == HISTORY_WEEKS
    assert max(d.finished_at for d in finished) < now
    # Each run took its time: requested, approved, started and finished in that order.
    failed = Deployment.objects.get(release__version="1.3.1", environment=production())
    assert failed.status == Status.FAILED and "503" in failed.error
    approved = failed.approvals.order_by("created_at")
    assert failed.created_at < approved[0].created_at < approved[1].created_at
    assert approved[1].created_at < failed.started_at < failed.finished_at
    assert failed.finished_at - failed.started_at == timedelta(minutes=24)


def test_it_gives_every_dora_key_a_history_in_production():
    seed()
    env = production()
    metrics = delivery_metrics([env], days=90)
    keys = metrics.keys[env.pk]
    # 1.3.0, 1.3.2 to 1.3.6 succeeded; 1.3.1 failed; 1.3.3 was rolled back.
    assert (keys.deployments, keys.changes, keys.failures) == (6, 7, 2)
    assert (keys.restores, keys.unrestored) == (2, 0)
    # The hotfix a day after 1.3.1 failed, the rollback within the hour.
    assert timedelta(hours=10) < keys.restore_time < timedelta(hours=13)
    assert timedelta(days=1) < keys.lead_time < timedelta(days=4)
    assert len([week for week, count in metrics.frequency[env.pk].items() if count]) == 6
    rollback = Deployment.objects.get(environment=env, kind=Kind.ROLLBACK)
    assert (rollback.release.version, rollback.rollback_of.release.version) == ("1.3.2", "1.3.3")
    assert rollback.status == Status.SUCCEEDED
    platform = delivery_metrics([production("fintech-ai-platform")], days=90)
    assert platform.keys[production("fintech-ai-platform").pk].deployments == 2


def test_it_writes_the_trail_in_time_order():
    seed()
    times = list(AuditEvent.objects.order_by("seq").values_list("at", flat=True))
    assert times == sorted(times)
    assert timezone.now() - times[0] > timedelta(weeks=HISTORY_WEEKS - 1)
    # The open request was made now, after the history.
    waiting = Deployment.objects.get(environment=production(), status=Status.PLANNING)
    assert timezone.now() - waiting.created_at < timedelta(minutes=5)
    assert verify_chain().ok


def test_it_never_writes_history_before_the_trails_last_event():
    """A trail that already has an event now: the history is squeezed after it."""
    audit.record("portal.note", actor_name="admin", after={"note": "before the demo"})
    marker = AuditEvent.objects.get()
    seed()
    times = list(AuditEvent.objects.order_by("seq").values_list("at", flat=True))
    assert times == sorted(times)
    assert times[0] == marker.at
    assert Deployment.objects.filter(created_at__lt=marker.at).count() == 0
    assert verify_chain().ok


def test_it_leaves_the_history_of_an_application_already_there_alone():
    """A database seeded before: its history stays; nothing is squeezed into now."""
    Application.objects.create(slug="fraud-detector", name="Fraud Detector")
    seed()
    assert not Release.objects.filter(application__slug="fraud-detector").exists()
    assert Release.objects.filter(application__slug="fintech-ai-platform").count() == 4
    assert verify_chain().ok


def test_it_prices_what_runs_in_production_from_the_recorded_plan():
    seed()
    env = production()
    runs_now = Deployment.objects.filter(environment=env).succeeded_latest_first().first()
    assert runs_now.release.version == "1.3.6"
    estimate = current_estimates([env.pk])[env.pk]
    assert estimate.deployment == runs_now
    assert estimate.recorded
    expected = recorded_plan_cost()
    assert estimate.monthly_total_usd == Decimal(expected["monthly_total_usd"]) > 150
    assert estimate.region == "us-east-1"  # where seed 002's configuration runs
    assert len(estimate.resources) == len(expected["resources"]) == 42
    event = AuditEvent.objects.get(action="deployment.cost_recorded")
    assert (event.target_id, event.actor_name) == (str(runs_now.pk), "system")
    assert event.after["plan"] == "infra/plans/seed002-production.json"
    # Only that one: the rest of the history ran no plan.
    assert CostEstimate.objects.count() == 1


def test_it_labels_the_recorded_estimate_on_the_dashboard_and_the_cost_page(client):
    seed()
    client.force_login(User.objects.get(username="dave"))
    home = client.get(reverse("home")).content.decode()
    card = home[home.index(f'id="environment-card-{production().pk}"') :]
    card = card[: card.index("</article>")]
    assert "est. $207.13/month" in card
    assert 'data-testid="estimate-recorded"' in card
    costs = client.get(reverse("application-costs", args=["fraud-detector"])).content.decode()
    row = costs[costs.index('data-testid="costs-production"') :]
    row = row[: row.index("</tr>")]
    assert "$207.13" in row and ">recorded</span>" in row
    staging = costs[costs.index('data-testid="costs-staging"') :]
    assert ">recorded</span>" not in staging[: staging.index("</tr>")]
    page = client.get(reverse("deployment-detail", args=[production().deployments.get(
        release__version="1.3.6").pk])).content.decode()  # fmt: skip
    assert 'data-testid="cost-recorded"' in page


def test_it_changes_nothing_when_run_again():
    seed()
    assert CostEstimate.objects.count() == 1
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
