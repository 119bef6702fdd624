"""Load the demo catalog, users and eight weeks of fully audited release history.

The systems are the ones whose manual runbooks Gantry replaces: `fraud-detector`
(ECS Fargate in ca-central-1) and `fintech-ai-platform` (Kubernetes, one
namespace per environment). The history is made with the domain methods of
real use (Release.register, Deployment.request/approve/start/finish, rollbacks)
while a controlled clock (time-machine) walks through the weeks, so every row
and audit event carries the time it would have had and the chain stays in
order: the clock never goes back before the trail's last event, nor past now.
Safe to run again: anything already present is left as it is and no audit
event is written twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from kubernetes.client import AppsV1Api
from kubernetes.client.exceptions import ApiException

from deployments import drift, rollback, sandbox
from deployments.choices import Status, Stream
from deployments.demo import (
    APPROVAL_COMMENT,
    APPROVAL_MINUTES,
    HISTORY_WEEKS,
    QUEUE_MINUTES,
    RECORDED_PLAN,
    RUN_MINUTES,
    SANDBOX_API_ENV,
    SEED_WORKER,
    TORONTO,
    ApplicationSpec,
    EnvironmentSpec,
    ReleaseSpec,
    Rollout,
    commit_of,
    fintech_ai_platform,
    fraud_detector,
    image_ref,
)
from deployments.engine import step_context
from deployments.models import CostEstimate, Deployment, LogLine, Release
from deployments.runners import get_runner
from environments import pricing
from environments.choices import FreezeKind, ImageVerification, StepKind, Tier
from environments.costs import fetch_costs
from environments.models import Application, Environment, FreezeWindow, Service, Step
from portal.cloud.errors import CloudError
from portal.cloud.kube import KubeAccess
from portal.core import audit, group_roles
from portal.core.choices import Role
from portal.core.models import AuditEvent, Membership

# Printed by `make run` too. Demo only: never reuse it for a real installation.
# Production approvals need a second factor confirmed this recently (minutes).
IDENTITY_MFA_MINUTES = 15
# Production's cost rule (policies/cost_increase_approval.rego): a plan adding
# more than this per month needs one more approval, from finance (carol).
COST_INCREASE_LIMIT_USD = 250
# Changed by hand in the sandbox after seeding: the demo's drift (namespace,
# Deployment, container, image). The dashboard shows it within a sweep.
DEMO_DRIFT = ("fintech-ai-dev", "api-gateway", "api-gateway",
              "registry.example.com/fintech-ai/api-gateway:hotfix-manual")  # fmt: skip
DEMO_PASSWORD = "gantry-demo"
DEMO_ROLES = {
    "alice": Role.DEPLOYER,
    "bob": Role.APPROVER,
    "carol": Role.APPROVER,
    "dave": Role.VIEWER,
}
# Roles for users who sign in through SSO (OIDC_ISSUER), from their IdP groups:
# the demo works with any IdP that sends these groups.
DEMO_GROUP_ROLES = {
    "gantry-deployers": Role.DEPLOYER,
    "gantry-approvers": Role.APPROVER,
    "gantry-viewers": Role.VIEWER,
}


@contextmanager
def acting_as(user: User | None) -> Iterator[None]:
    """Attribute the audit events written inside the block to `user` (None: the system)."""
    token = audit.set_context(audit.AuditContext(actor=user))
    try:
        yield
    finally:
        audit.reset_context(token)


class HistoryClock:
    """The time the history is written at. The domain methods read
    `timezone.now()` (and the models' defaults): the seed moves that clock
    instead of editing rows afterwards, so rows and audit events carry their
    moment, in order. It only ever moves forward, starts no earlier than the
    audit trail's last event and stops at the real now: a history written into
    a trail that already has recent events is squeezed into what is left."""

    def __init__(self, first: datetime) -> None:
        self.until = timezone.now()
        latest = AuditEvent.objects.aggregate(latest=Max("at"))["latest"]
        self.now = min(max(first, latest or first), self.until)
        try:
            # A demo-only dependency (requirements-dev.txt, which `make run`
            # installs): production images have no demo to seed.
            import time_machine
        except ImportError:
            raise CommandError(
                "seed_demo needs the development requirements (time-machine): "
                "pip install -r requirements-dev.txt, or use `make run`."
            ) from None
        self._travel = time_machine.travel(self.now, tick=False)

    def __enter__(self) -> HistoryClock:
        self._traveller = self._travel.start()
        return self

    def __exit__(self, *exc) -> None:
        self._travel.stop()

    def move_to(self, moment: datetime) -> None:
        self.now = min(max(moment, self.now), self.until)
        self._traveller.move_to(self.now)

    def advance(self, minutes: float) -> None:
        self.move_to(self.now + timedelta(minutes=minutes))


def history_start(today: datetime | None = None) -> datetime:
    """Day 0 of the history: the Monday HISTORY_WEEKS weeks before this week's, 00:00 Toronto."""
    local = (today or timezone.now()).astimezone(ZoneInfo(TORONTO))
    monday = local.date() - timedelta(days=local.weekday() + 7 * HISTORY_WEEKS)
    return datetime.combine(monday, time(0, 0), tzinfo=ZoneInfo(TORONTO))


def moment(start: datetime, day: int, at: str) -> datetime:
    hours, minutes = (int(part) for part in at.split(":"))
    return datetime.combine(start.date() + timedelta(days=day), time(hours, minutes),
                            tzinfo=start.tzinfo)  # fmt: skip


def record_run(
    deployment: Deployment, clock: HistoryClock, minutes: float, error: str = ""
) -> None:
    """Take a queued deployment through its run as the deploy job does:
    Deployment.start, then Deployment.finish (succeeded, or failed with
    `error`) `minutes` later, with the same audit events.

    The demo history needs finished deployments, but nothing must really be
    deployed while seeding: the run's one log line says so. Real deployments
    are carried out by the engine's RQ job.
    """
    with acting_as(None):
        if not deployment.start(SEED_WORKER):
            raise CommandError(f"Deployment {deployment} is not queued; cannot record its run.")
        outcome = "failed" if error else "succeeded"
        LogLine.objects.create(
            deployment=deployment,
            seq=1,
            stream=Stream.SYSTEM,
            text=f"Recorded as {outcome} by the demo seed (nothing was run).",
        )
        clock.advance(minutes)
        deployment.finish(Status.FAILED if error else Status.SUCCEEDED, error)
    deployment.refresh_from_db()


def recorded_plan_cost() -> dict:
    """RECORDED_PLAN priced in the region its configuration deploys to."""
    plan = json.loads(RECORDED_PLAN.read_text())
    region = plan.get("variables", {}).get("aws_region", {}).get("value") or "us-east-1"
    return pricing.estimate_plan(plan, region).as_json()


class Command(BaseCommand):
    help = "Load the demo catalog, users and release history (idempotent)."

    def handle(self, *args, **options) -> None:
        self.created: list[str] = []
        self.new_environments: list = []
        self.open_requests: list = []
        self.new_applications: set[int] = set()
        specs = (fraud_detector(), fintech_ai_platform())
        # One transaction: a failure leaves nothing half-seeded, and jobs the
        # domain methods enqueue on commit find every row already final.
        with transaction.atomic():
            start = history_start()
            # The catalog and the history at their time, from the morning of
            # day 0 on; everything after them at the real now.
            with HistoryClock(moment(start, 0, "08:00")) as clock:
                users = self.ensure_users()
                applications = []
                for spec in specs:
                    application = self.ensure_application(spec, users["admin"])
                    self.ensure_memberships(application, users)
                    self.ensure_group_roles(application, users["admin"])
                    applications.append((spec, application))
                self.ensure_history(applications, users, clock, start)
            for spec, application in applications:
                self.ensure_sandbox_api(spec, application, users["admin"])
            # Steps after the recorded history (which ran nothing), before the
            # open requests: those are planned for real by the worker.
            self.ensure_steps()
            # Images in the sandbox's registry and their checks on, before the
            # open requests: those are verified for real.
            for spec, application in applications:
                self.ensure_image_checks(spec, application, users["admin"])
            # The sandbox starts empty each time: it is made to run what the
            # recorded history deployed, then one service is changed by hand.
            self.ensure_sandbox_runs_history()
            self.ensure_open_requests(users)
            # Freezes last: the open requests must not fall into a freeze
            # that happens to be in force while seeding.
            for spec, application in applications:
                self.ensure_freezes(spec, application, users["admin"])
                # The identity rules came into force after the recorded history
                # (whose approvals were given before approvers had a second factor).
                self.ensure_identity_rules(spec, application, users["admin"])
                self.ensure_cost_rule(spec, application, users)
        # The sandbox's Cost Explorer holds 60 days of demo spend: fetch it now,
        # so the cost page and the dashboard have figures at first start.
        if os.environ.get("AWS_ENDPOINT_URL"):
            fetched = fetch_costs(days=60)
            self.stdout.write(f"Costs: {fetched['snapshots']} new or changed daily figures.")
        if self.created:
            self.stdout.write("Demo data loaded: " + "; ".join(self.created) + ".")
        else:
            self.stdout.write("Demo data already present; nothing changed.")

    def ensure_users(self) -> dict[str, User]:
        users = {}
        for username in ("admin", *DEMO_ROLES):
            user = User.objects.filter(username=username).first()
            if user is None:
                make = (
                    User.objects.create_superuser
                    if username == "admin"
                    else User.objects.create_user
                )
                user = make(username, f"{username}@example.com", DEMO_PASSWORD)
                self.created.append(f"user {username}")
            users[username] = user
        return users

    def ensure_application(self, spec: ApplicationSpec, admin: User) -> Application:
        application, created = Application.objects.get_or_create(
            slug=spec.slug, defaults={"name": spec.name, "description": spec.description}
        )
        for slug in spec.services:
            Service.objects.get_or_create(
                application=application,
                slug=slug,
                defaults={"name": slug, "image_repositories": [f"{spec.registry}/{slug}"]},
            )
        for env_spec in spec.environments:
            environment, env_created = Environment.objects.get_or_create(
                application=application,
                slug=env_spec.slug,
                defaults={
                    "name": env_spec.name,
                    "order": env_spec.order,
                    "tier": env_spec.tier,
                    "required_approvals": env_spec.required_approvals,
                    "require_previous_success": env_spec.require_previous_success,
                    "rollback_required_approvals": env_spec.rollback_required_approvals,
                    "region": "ca-central-1",
                    "kube_context": env_spec.kube_context,
                    "variables": env_spec.variables,
                    "health_urls": env_spec.health_urls,
                    "monthly_budget_usd": Decimal(env_spec.budget),
                    "alarm_sources": env_spec.alarm_sources,
                    "webhook_url": "",  # set a Slack incoming webhook in the admin
                },
            )
            if env_created:
                self.new_environments.append((environment, env_spec))
            elif env_spec.alarm_sources and not environment.alarm_sources:
                self.ensure_alarm_sources(environment, env_spec, admin)
        if created:
            self.new_applications.add(application.pk)
            self.created.append(f"application {spec.slug}")
            with acting_as(admin):
                audit.record(
                    "application.created",
                    application,
                    application=application,
                    after={
                        "services": list(spec.services),
                        "environments": {
                            env.slug: env.policy_snapshot()
                            for env in application.environments.all()
                        },
                    },
                )
        return application

    def ensure_alarm_sources(
        self, environment: Environment, env_spec: EnvironmentSpec, admin: User
    ) -> None:
        """A demo database seeded before alarms existed gets its sources (audited)."""
        environment.alarm_sources = env_spec.alarm_sources
        environment.save(update_fields=["alarm_sources"])
        self.created.append(f"{environment} alarm sources")
        with acting_as(admin):
            audit.record("environment.updated", environment, environment=environment,
                         before={"alarm_sources": {}},
                         after={"alarm_sources": env_spec.alarm_sources})  # fmt: skip

    def ensure_sandbox_api(
        self, spec: ApplicationSpec, application: Application, admin: User
    ) -> None:
        """Each `make run` starts the sandbox's stub API on a new port: point the
        environments' `api_base_url` at it again (audited, like any change)."""
        if not os.environ.get(SANDBOX_API_ENV):
            return
        for env_spec in spec.environments:
            environment = application.environments.get(slug=env_spec.slug)
            wanted = env_spec.variables["api_base_url"]
            before = dict(environment.variables or {})
            if before.get("api_base_url") == wanted:
                continue
            environment.variables = {**before, "api_base_url": wanted}
            environment.save(update_fields=["variables"])
            self.created.append(f"{application.slug} {environment.slug} api_base_url")
            with acting_as(admin):
                audit.record(
                    "environment.updated",
                    environment,
                    environment=environment,
                    before={"variables": before},
                    after={"variables": environment.variables},
                )

    def ensure_memberships(self, application: Application, users: dict[str, User]) -> None:
        for environment in application.environments.all():
            for username, role in DEMO_ROLES.items():
                membership, created = Membership.objects.get_or_create(
                    user=users[username], environment=environment, role=role
                )
                if created:
                    with acting_as(users["admin"]):
                        audit.record(
                            "membership.granted",
                            membership,
                            environment=environment,
                            after={"user": username, "role": role},
                        )

    def ensure_group_roles(self, application: Application, admin: User) -> None:
        """Map the demo IdP groups on every environment of the application."""
        for group, role in DEMO_GROUP_ROLES.items():
            with acting_as(admin):
                _, created = group_roles.add_mapping(group, role, application=application)
            if created:
                self.created.append(f"{application.slug} {group} → {role}")

    def ensure_history(
        self,
        applications: list[tuple[ApplicationSpec, Application]],
        users: dict[str, User],
        clock: HistoryClock,
        start: datetime,
    ) -> None:
        """Register the releases of the applications created in this run and
        walk them through their rollouts with the domain methods, all events in
        the order of their time. An application already there keeps the
        history it has: a history added to it would be squeezed into the
        present, after its last audit event, and could meet its freeze."""
        events = []  # (when, order of writing, application spec, application, release, rollout)
        for spec, application in applications:
            if application.pk not in self.new_applications:
                continue
            environments = {env.slug: env for env in application.environments.all()}
            for release in spec.history:
                registered_at = moment(start, release.day, "09:00")
                events.append((registered_at, len(events), spec, application, release, None))
                for rollout in release.rollouts:
                    if rollout.left_open:
                        environment = environments[rollout.environment]
                        self.open_requests.append((application, release, environment, rollout))
                        continue
                    when = moment(start, rollout.day, rollout.at)
                    events.append((when, len(events), spec, application, release, rollout))
                self.created.append(f"{spec.slug} {release.version}")
        registered: dict[tuple[int, str], Release] = {}
        for when, _, spec, application, release, rollout in sorted(events, key=lambda e: e[:2]):
            clock.move_to(when)
            key = (application.pk, release.version)
            if rollout is None:
                registered[key] = self.register(spec, application, release, users["alice"])
                continue
            environment = application.environments.get(slug=rollout.environment)
            deployment = self.request(registered[key], environment, rollout, users, clock)
            record_run(deployment, clock, RUN_MINUTES[environment.tier], rollout.error)
            if rollout.recorded_cost:
                with acting_as(None):
                    CostEstimate.record_saved_plan(
                        deployment, recorded_plan_cost(),
                        str(RECORDED_PLAN.relative_to(settings.BASE_DIR)),
                    )  # fmt: skip

    def register(
        self, spec: ApplicationSpec, application: Application, release_spec: ReleaseSpec,
        alice: User,
    ) -> Release:  # fmt: skip
        artifacts = {
            service: image_ref(spec.registry, service, release_spec.version)
            for service in spec.services
        }
        with acting_as(alice):
            return Release.register(
                application,
                release_spec.version,
                artifacts,
                alice,
                notes=release_spec.notes,
                commit=commit_of(spec.slug, release_spec.version),
            )

    def request(self, release: Release, environment: Environment, rollout: Rollout,
                users: dict[str, User], clock: HistoryClock) -> Deployment:  # fmt: skip
        """Request as alice (a rollback: of what runs there now) and approve as
        the rollout says, each approval a while after the one before."""
        alice = users["alice"]
        with acting_as(alice):
            if rollout.rollback:
                deployment = rollback.request_rollback(environment, alice, rollout.reason)
            else:
                deployment = Deployment.request(release, environment, alice, rollout.reason)
        for username in rollout.approvers:
            clock.advance(APPROVAL_MINUTES)
            with acting_as(users[username]):
                deployment.approve(users[username], APPROVAL_COMMENT)
        clock.advance(QUEUE_MINUTES)
        return deployment

    def ensure_steps(self) -> None:
        for environment, env_spec in self.new_environments:
            Step.objects.bulk_create(
                Step(environment=environment, order=order, name=name, kind=kind, config=config)
                for order, (name, kind, config) in enumerate(env_spec.steps, start=1)
            )
        self.new_environments = []

    def ensure_open_requests(self, users: dict[str, User]) -> None:
        """Requests still under review, made now: with Terraform steps they
        start in `planning`, and the worker plans them against the sandbox."""
        alice = users["alice"]
        for application, release_spec, environment, rollout in self.open_requests:
            release = application.releases.get(version=release_spec.version)
            with acting_as(alice):
                deployment = Deployment.request(release, environment, alice, rollout.reason)
            for username in rollout.approvers:
                if deployment.status != Status.AWAITING_APPROVAL:
                    break  # approvals wait for the plan
                with acting_as(users[username]):
                    deployment.approve(users[username], APPROVAL_COMMENT)
        self.open_requests = []

    def ensure_sandbox_runs_history(self) -> None:
        """With the sandbox running: each environment's ECS services and
        Kubernetes Deployments run the images of its latest succeeded
        deployment (set by the same runners a deployment uses), so drift
        checks compare like with like. Then DEMO_DRIFT: someone ran `kubectl
        set image` in fintech-ai-platform's dev behind Gantry's back."""
        if not os.environ.get("AWS_ENDPOINT_URL") or not os.environ.get("KUBE_API_URL"):
            return
        kinds = (StepKind.TERRAFORM, StepKind.ECS_ROLLING, StepKind.K8S_ROLLING)
        steps = Step.objects.filter(kind__in=kinds).select_related("environment")
        for step in steps.order_by("environment_id", "order"):
            current = drift.current_deployment(step.environment)
            if current is None:
                continue
            config = dict(step.config)
            if step.kind != StepKind.TERRAFORM:  # the sandbox answers at once
                config.update(timeout_seconds=60, poll_seconds=0.2)
            with tempfile.TemporaryDirectory(prefix="gantry-seed-") as workdir:
                ctx = step_context(current, config, workdir=Path(workdir), log=lambda *a, **k: None)
                try:
                    runner = get_runner(step.kind)
                    if step.kind == StepKind.TERRAFORM:  # its state, as the last apply left it
                        ctx.plan = runner.plan(ctx)
                    runner.run(ctx)
                except CloudError as exc:
                    self.stdout.write(f"Sandbox: {step.environment} not set up: {exc.message}")
        namespace, name, container, image = DEMO_DRIFT
        apps = AppsV1Api(KubeAccess()())
        try:
            apps.patch_namespaced_deployment(name, namespace, {"spec": {"template": {"spec": {
                "containers": [{"name": container, "image": image}]}}}})  # fmt: skip
        except ApiException as exc:  # a sandbox without that namespace
            self.stdout.write(f"Sandbox: no demo drift ({exc.status} {exc.reason}).")
            return
        self.created.append(f"sandbox runs the recorded releases; drift in {namespace}/{name}")

    def ensure_image_checks(
        self, spec: ApplicationSpec, application: Application, admin: User
    ) -> None:
        """With the sandbox running: every demo release's images in its ECR (moto),
        and requests checked against it, blocking in production and warning
        elsewhere. Without it (your own AWS) the checks stay off."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            return
        for release in application.releases.all():
            for artifact in release.artifacts.all():
                sandbox.put_demo_image(endpoint, artifact.image_ref, tag=release.version)
        for env_spec in spec.environments:
            environment = application.environments.get(slug=env_spec.slug)
            if environment.image_verification != ImageVerification.OFF:
                continue  # set before (or changed by an admin since): leave it
            wanted = (
                ImageVerification.BLOCK if env_spec.tier == Tier.PRODUCTION
                else ImageVerification.WARN
            )  # fmt: skip
            before = environment.policy_snapshot()
            Environment.objects.filter(pk=environment.pk).update(image_verification=wanted)
            environment.refresh_from_db()
            with acting_as(admin):
                audit.record("environment.policy_changed", environment, environment=environment,
                             before=before, after=environment.policy_snapshot())  # fmt: skip
            self.created.append(f"{spec.slug} {env_spec.slug} image checks")

    def ensure_identity_rules(
        self, spec: ApplicationSpec, application: Application, admin: User
    ) -> None:
        """Production: implementers may not approve, and approvers confirm their
        identity with MFA at most IDENTITY_MFA_MINUTES before approving."""
        for env_spec in spec.environments:
            if env_spec.tier != Tier.PRODUCTION:
                continue
            environment = application.environments.get(slug=env_spec.slug)
            if environment.implementers_may_not_approve or environment.approval_mfa_minutes:
                continue  # set before (or changed by an admin since): leave it
            before = environment.policy_snapshot()
            Environment.objects.filter(pk=environment.pk).update(
                implementers_may_not_approve=True, approval_mfa_minutes=IDENTITY_MFA_MINUTES
            )
            environment.refresh_from_db()
            with acting_as(admin):
                audit.record("environment.policy_changed", environment, environment=environment,
                             before=before, after=environment.policy_snapshot())  # fmt: skip
            self.created.append(f"{spec.slug} {env_spec.slug} identity rules")

    def ensure_cost_rule(self, spec: ApplicationSpec, application: Application, users) -> None:
        """Production: a cost increase above COST_INCREASE_LIMIT_USD a month
        needs finance's approval too; carol is in finance."""
        finance, _ = Group.objects.get_or_create(name="finance")
        users["carol"].groups.add(finance)
        for env_spec in spec.environments:
            environment = application.environments.get(slug=env_spec.slug)
            if env_spec.tier != Tier.PRODUCTION or environment.cost_increase_limit_usd is not None:
                continue  # set before (or changed by an admin since): leave it
            before = environment.policy_snapshot()
            Environment.objects.filter(pk=environment.pk).update(
                cost_increase_limit_usd=COST_INCREASE_LIMIT_USD, cost_approval_group=finance
            )
            environment.refresh_from_db()
            with acting_as(users["admin"]):
                audit.record("environment.policy_changed", environment, environment=environment,
                             before=before, after=environment.policy_snapshot())  # fmt: skip
            self.created.append(f"{spec.slug} {env_spec.slug} cost rule")

    def ensure_freezes(self, spec: ApplicationSpec, application: Application, admin: User) -> None:
        for env_spec in spec.environments:
            environment = application.environments.get(slug=env_spec.slug)
            if not env_spec.weekly_freeze or environment.freeze_windows.exists():
                continue
            # Friday 16:00 to Monday 08:00, Toronto time: no weekend releases.
            window = FreezeWindow(
                environment=environment,
                kind=FreezeKind.WEEKLY,
                reason="Weekend change freeze",
                start_weekday=4,
                start_time=time(16, 0),
                end_weekday=0,
                end_time=time(8, 0),
                time_zone=TORONTO,
            )
            window.full_clean()
            window.save()
            with acting_as(admin):
                audit.record(
                    "freeze_window.created",
                    window,
                    environment=environment,
                    after={
                        "reason": window.reason,
                        "weekly": "Fri 16:00 → Mon 08:00",
                        "time_zone": TORONTO,
                    },
                )
