"""Releases, deployments and their approvals: the four-eyes rules live here.

State changes go through the methods on Deployment. Each one takes the row
lock or makes a conditional UPDATE, checks the rules again under that lock,
and writes its audit event in the same transaction, so two people clicking at
once can never double-count an approval or skip a rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, models, transaction
from django.utils import timezone

from deployments.choices import (
    OPEN_STATUSES,
    Channel,
    Decision,
    DeliveryStatus,
    Kind,
    NotificationEvent,
    Status,
    StepStatus,
    Stream,
)
from environments.choices import StepKind
from environments.live import environment_changed
from environments.models import Application, Environment, FreezeOverride, Service
from portal.core import audit
from portal.core.choices import Role
from portal.core.roles import Conflict, Forbidden, PolicyError, has_role

log = logging.getLogger(__name__)

# An image pinned by digest: anything before "@sha256:" and exactly 64 hex digits.
IMAGE_REF_RE = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9._\-/:]*)@sha256:(?P<digest>[0-9a-f]{64})$"
)
# PostgreSQL's SQLSTATE for a NOWAIT lock that another transaction holds.
LOCK_NOT_AVAILABLE = "55P03"
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,63}$")


class Release(models.Model):
    """A version of an application with one pinned image per service. Immutable."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="releases")
    version = models.CharField(max_length=64)
    notes = models.TextField(blank=True)
    commit = models.CharField(max_length=40, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "version"], name="release_unique_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.application.slug} {self.version}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise PolicyError("Releases are immutable; register a new version instead.")
        super().save(*args, **kwargs)

    def artifact_map(self) -> dict[str, str]:
        return {a.service.slug: a.image_ref for a in self.artifacts.all()}

    @classmethod
    def register(
        cls,
        application: Application,
        version: str,
        artifacts: dict[str, str],
        user,
        notes: str = "",
        commit: str = "",
    ) -> Release:
        """Validate and store a release; every problem names the field it is about."""
        if not any(has_role(user, env, Role.DEPLOYER) for env in application.environments.all()):
            raise Forbidden("You need the deployer role in this application to register releases.")
        version = (version or "").strip()
        if not VERSION_RE.match(version):
            raise PolicyError(
                "Use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit.",
                field="version",
            )
        commit = (commit or "").strip().lower()
        if commit and not COMMIT_RE.match(commit):
            raise PolicyError("A commit is 7 to 40 hexadecimal digits.", field="commit")
        if not isinstance(artifacts, dict):
            raise PolicyError("Give an object mapping service slug to image.", field="artifacts")
        services = {s.slug: s for s in application.services.all()}
        unknown = sorted(set(artifacts) - set(services))
        if unknown:
            raise PolicyError(
                f"Unknown service(s) for {application.slug}: {', '.join(unknown)}.",
                field="artifacts",
            )
        missing = sorted(set(services) - set(artifacts))
        if missing:
            raise PolicyError(
                f"Missing an image for service(s): {', '.join(missing)}.", field="artifacts"
            )
        for slug, ref in artifacts.items():
            if not isinstance(ref, str) or not IMAGE_REF_RE.match(ref.strip()):
                raise PolicyError(
                    f"{slug}: pin the image by digest, as repository@sha256:<64 hex digits>.",
                    field=f"artifacts.{slug}",
                )
        with transaction.atomic():
            if cls.objects.filter(application=application, version=version).exists():
                raise Conflict(
                    f"{application.slug} {version} is already registered; releases are immutable.",
                    field="version",
                )
            try:
                with transaction.atomic():
                    release = cls.objects.create(
                        application=application,
                        version=version,
                        notes=notes or "",
                        commit=commit,
                        created_by=user,
                    )
            except Exception as exc:  # the unique constraint lost a race
                from django.db import IntegrityError

                if isinstance(exc, IntegrityError):
                    raise Conflict(
                        f"{application.slug} {version} is already registered.", field="version"
                    ) from None
                raise
            Artifact.objects.bulk_create(
                Artifact(release=release, service=services[slug], image_ref=ref.strip())
                for slug, ref in sorted(artifacts.items())
            )
            audit.record(
                "release.registered",
                release,
                actor=user,
                application=application,
                after={"version": version, "artifacts": artifacts, "commit": commit},
            )
        return release


class Artifact(models.Model):
    """The image a release pins for one service."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="artifacts")
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="+")
    image_ref = models.CharField(max_length=300)

    class Meta:
        ordering = ["service__slug"]
        constraints = [
            models.UniqueConstraint(fields=["release", "service"], name="artifact_one_per_service")
        ]

    def __str__(self) -> str:
        return self.image_ref

    @property
    def repository(self) -> str:
        return self.image_ref.split("@", 1)[0]

    @property
    def digest(self) -> str:
        return self.image_ref.split("@", 1)[1]


def approval_digest(artifacts: dict[str, str], plan_sha256: str) -> str:
    """What an approval is bound to: the exact images and the Terraform plan."""
    content = json.dumps(
        {"artifacts": artifacts, "plan_sha256": plan_sha256},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(content.encode()).hexdigest()


def initial_status(environment: Environment, required_approvals: int) -> str:
    """Plan first when the process has Terraform steps: approvers see the plan."""
    if environment.steps.filter(kind=StepKind.TERRAFORM).exists():
        return Status.PLANNING
    return Status.AWAITING_APPROVAL if required_approvals else Status.QUEUED


class DeploymentQuerySet(models.QuerySet):
    def succeeded_latest_first(self) -> DeploymentQuerySet:
        """Succeeded deployments, what runs now first: the latest to finish
        (one without a finish time last, whatever the database's NULL order),
        then the latest created. The one rule for "current" everywhere."""
        return self.filter(status=Status.SUCCEEDED).order_by(
            models.F("finished_at").desc(nulls_last=True), "-id"
        )


class Deployment(models.Model):
    """A request to put a release into an environment, and its whole life."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="deployments")
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="deployments"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.DEPLOY)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PLANNING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty for automatic rollbacks.",
    )
    reason = models.TextField()
    # Approvals needed, frozen at request time: a later policy change does not
    # alter a request already under review.
    required_approvals = models.PositiveSmallIntegerField(default=0)
    plan_sha256 = models.CharField(max_length=64, blank=True)
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="rollbacks"
    )
    freeze_override = models.ForeignKey(
        FreezeOverride, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    # Set by the job that runs the deployment; a stale heartbeat means its worker died.
    worker_name = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["environment", "status", "-finished_at"]),
            models.Index(fields=["status", "-created_at"]),
        ]
        constraints = [
            # The environment lock: the database lets one deployment run per
            # environment; a second one stays queued until the first is done.
            models.UniqueConstraint(
                fields=["environment"],
                condition=models.Q(status="running"),
                name="one_running_per_environment",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.release} → {self.environment.slug}"

    # -- what is being approved -------------------------------------------------

    def artifact_map(self) -> dict[str, str]:
        return self.release.artifact_map()

    def approval_digest(self) -> str:
        return approval_digest(self.artifact_map(), self.plan_sha256)

    def valid_approvals(self) -> models.QuerySet:
        """Approvals that still count: given for exactly what will ship now."""
        return self.approvals.filter(decision=Decision.APPROVE, digest=self.approval_digest())

    @property
    def expires_at(self):
        return self.created_at + timedelta(hours=self.environment.approval_ttl_hours)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    # -- requesting -------------------------------------------------------------

    @classmethod
    def request(
        cls,
        release: Release,
        environment: Environment,
        user,
        reason: str,
        kind: str = Kind.DEPLOY,
        rollback_of: Deployment | None = None,
    ) -> Deployment:
        """Create a deployment request after checking every rule that applies."""
        if not has_role(user, environment, Role.DEPLOYER):
            raise Forbidden(f"You need the deployer role in {environment} to request this.")
        if release.application_id != environment.application_id:
            raise PolicyError(
                f"{release} belongs to another application than {environment}.", field="release"
            )
        reason = (reason or "").strip()
        if not reason:
            raise PolicyError("Say why this deployment is needed.", field="reason")
        if (
            kind == Kind.ROLLBACK
            and not cls.objects.filter(
                release=release, environment=environment, status=Status.SUCCEEDED
            ).exists()
        ):
            # A rollback needs fewer approvals, so it may only bring back
            # something that has already run here successfully.
            raise PolicyError(
                f"{release.version} never succeeded in {environment.slug}; "
                "only a release that ran here before can be rolled back to.",
                field="release",
            )
        if environment.require_previous_success and kind == Kind.DEPLOY:
            previous = environment.previous()
            if (
                previous is not None
                and not cls.objects.filter(
                    release=release, environment=previous, status=Status.SUCCEEDED
                ).exists()
            ):
                raise PolicyError(
                    f"{release.version} must first succeed in {previous.slug} "
                    f"before it may go to {environment.slug}.",
                    field="release",
                )
        with transaction.atomic():
            # Lock the environment row so freeze, override and duplicate checks
            # and the insert happen as one step.
            env = Environment.objects.select_for_update().get(pk=environment.pk)
            override = None
            freeze = env.active_freeze()
            if freeze is not None:
                override = env.active_override()
                if override is None:
                    window, until = freeze
                    raise PolicyError(
                        f"{env} is frozen until {until:%Y-%m-%d %H:%M %Z} ({window.reason}). "
                        "An admin can request a break-glass override.",
                        field="environment",
                    )
            if cls.objects.filter(
                release=release, environment=env, status__in=OPEN_STATUSES
            ).exists():
                raise Conflict(
                    f"{release.version} already has an open request for {env.slug}.",
                    field="release",
                )
            required = (
                env.required_approvals if kind == Kind.DEPLOY else env.rollback_required_approvals
            )
            status = initial_status(env, required)
            deployment = cls.objects.create(
                release=release,
                environment=env,
                kind=kind,
                requested_by=user,
                reason=reason,
                required_approvals=required,
                freeze_override=override,
                rollback_of=rollback_of,
                status=status,
                queued_at=timezone.now() if status == Status.QUEUED else None,
            )
            audit.record(
                "deployment.requested",
                deployment,
                actor=user,
                after={
                    "release": release.version,
                    "kind": kind,
                    "status": deployment.status,
                    "reason": reason,
                    "artifacts": deployment.artifact_map(),
                    "policy": env.policy_snapshot(),
                    "freeze_override": override.pk if override else None,
                    "rollback_of": rollback_of.pk if rollback_of else None,
                },
            )
            deployment.dispatch()
        return deployment

    # -- approving --------------------------------------------------------------

    def _lock(self) -> None:
        """Take the row lock, then reload: every rule is checked on fresh data."""
        Deployment.objects.select_for_update().filter(pk=self.pk).values_list("pk").first()
        self.refresh_from_db()

    def check_approver(self, user) -> None:
        """Raise Forbidden, saying why, if `user` may not decide on this deployment."""
        env = self.environment
        if self.requested_by_id is not None and user.pk == self.requested_by_id:
            raise Forbidden("You requested this deployment; someone else must approve it.")
        if not has_role(user, env, Role.APPROVER):
            raise Forbidden(f"You need the approver role in {env} to decide this.")
        if env.approver_group_id and not user.groups.filter(pk=env.approver_group_id).exists():
            raise Forbidden(f"Only members of {env.approver_group.name} may approve in {env}.")

    def _expire_if_stale(self) -> bool:
        if self.status == Status.AWAITING_APPROVAL and timezone.now() >= self.expires_at:
            self._set_status(Status.EXPIRED, "deployment.expired", finished_at=timezone.now())
            return True
        return False

    def _set_status(
        self, status: str, action: str, actor=None, detail: dict | None = None, **fields
    ) -> None:
        """Move to `status` (the caller holds the row lock) and record it."""
        before = self.status
        Deployment.objects.filter(pk=self.pk).update(status=status, **fields)
        self.status = status
        for name, value in fields.items():
            setattr(self, name, value)
        after = {"status": status, **(detail or {})}
        if fields.get("error"):
            after["error"] = fields["error"]
        audit.record(action, self, actor=actor, before={"status": before}, after=after)
        environment_changed(self.environment_id, "deployment")

    def _second_group_satisfied(self, approvals) -> bool:
        group_id = self.environment.second_approver_group_id
        if not group_id:
            return True
        return approvals.filter(user__groups__id=group_id).exists()

    def approve(self, user, comment: str = "") -> Approval:
        """Record user's approval; release the deployment when the policy is met."""
        # Expire in a transaction of its own, so the refusal below cannot undo it.
        if self.expire():
            raise PolicyError("This request has expired; request the deployment again.")
        with transaction.atomic():
            self._lock()
            if self.status != Status.AWAITING_APPROVAL:
                raise Conflict(
                    f"This deployment is {self.get_status_display().lower()}, "
                    "not awaiting approval."
                )
            if timezone.now() >= self.expires_at:
                raise PolicyError("This request has expired; request the deployment again.")
            self.check_approver(user)
            digest = self.approval_digest()
            # Once per person and plan: after a re-plan (a new digest) the
            # approvers decide again on what will now ship.
            if self.approvals.filter(user=user, digest=digest).exists():
                raise Conflict("You have already decided on this deployment.")
            approval = Approval.objects.create(
                deployment=self, user=user, decision=Decision.APPROVE,
                comment=(comment or "").strip(), digest=digest,
            )  # fmt: skip
            valid = self.valid_approvals().select_related("user")
            count = valid.count()
            audit.record(
                "deployment.approved",
                self,
                actor=user,
                after={
                    "approver": user.get_username(),
                    "digest": digest,
                    "plan_sha256": self.plan_sha256,
                    "artifacts": self.artifact_map(),
                    "count": count,
                    "required": self.required_approvals,
                    "comment": approval.comment,
                },
            )
            if count >= self.required_approvals and self._second_group_satisfied(valid):
                freeze = self.environment.active_freeze()
                if freeze and not self.environment.active_override():
                    window, until = freeze
                    raise PolicyError(
                        f"{self.environment} is frozen until {until:%Y-%m-%d %H:%M %Z} "
                        f"({window.reason}); approve again after the freeze."
                    )
                self._set_status(
                    Status.QUEUED,
                    "deployment.queued",
                    actor=user,
                    detail={"approvers": sorted(a.user.get_username() for a in valid)},
                    queued_at=timezone.now(),
                )
                from deployments import notifications

                # The run job first: on-commit hooks enqueue in this order.
                self.dispatch()
                notifications.announce(self, NotificationEvent.APPROVED)
        return approval

    def reject(self, user, comment: str = "") -> Approval:
        """A rejection by any eligible approver ends the request."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.AWAITING_APPROVAL:
                raise Conflict(
                    f"This deployment is {self.get_status_display().lower()}, "
                    "not awaiting approval."
                )
            self.check_approver(user)
            comment = (comment or "").strip()
            if not comment:
                raise PolicyError("Say why you reject this deployment.", field="comment")
            if self.approvals.filter(user=user, digest=self.approval_digest()).exists():
                raise Conflict("You have already decided on this deployment.")
            approval = Approval.objects.create(
                deployment=self, user=user, decision=Decision.REJECT,
                comment=comment, digest=self.approval_digest(),
            )  # fmt: skip
            self._set_status(
                Status.REJECTED,
                "deployment.rejected",
                actor=user,
                detail={"comment": comment, "digest": approval.digest},
                finished_at=timezone.now(),
            )
            from deployments import notifications

            notifications.announce(self, NotificationEvent.REJECTED)
        return approval

    def cancel(self, user, comment: str = "") -> None:
        """The requester or an environment admin withdraws a request, or stops a run."""
        with transaction.atomic():
            self._lock()
            if user.pk != self.requested_by_id and not has_role(user, self.environment, Role.ADMIN):
                raise Forbidden("Only the requester or an admin of this environment may cancel.")
            if self.status == Status.RUNNING:
                # The job sees the flag within a heartbeat, stops its step
                # cleanly (terminating a subprocess) and finishes as cancelled.
                if self.cancel_requested_at is None:
                    self.cancel_requested_at = timezone.now()
                    Deployment.objects.filter(pk=self.pk).update(
                        cancel_requested_at=self.cancel_requested_at
                    )
                    audit.record(
                        "deployment.cancel_requested",
                        self,
                        actor=user,
                        after={"comment": (comment or "").strip()[:1000]},
                    )
                return
            if self.status not in (Status.PLANNING, Status.AWAITING_APPROVAL, Status.QUEUED):
                raise Conflict(
                    f"This deployment is {self.get_status_display().lower()}; it cannot be "
                    "cancelled now."
                )
            self._set_status(
                Status.CANCELLED,
                "deployment.cancelled",
                actor=user,
                finished_at=timezone.now(),
                error=(comment or "").strip()[:1000],
            )

    def expire(self) -> bool:
        """Expire a request past its approval window (housekeeping job)."""
        with transaction.atomic():
            self._lock()
            return self._expire_if_stale()

    # -- running (called by the jobs in deployments/jobs.py) ----------------------

    @property
    def queue_name(self) -> str:
        return "high" if self.kind == Kind.ROLLBACK else "default"

    def dispatch(self) -> None:
        """Hand the deployment to whoever acts next; jobs enqueue after commit."""
        import django_rq

        from deployments import jobs, notifications

        if self.status == Status.PLANNING:
            django_rq.get_queue(self.queue_name).enqueue(jobs.plan_deployment, self.pk)
        elif self.status == Status.QUEUED:
            django_rq.get_queue(self.queue_name).enqueue(jobs.run_deployment, self.pk)
        elif self.status == Status.AWAITING_APPROVAL:
            notifications.announce(self, NotificationEvent.APPROVAL_NEEDED)
        # After the enqueue: on commit, the job goes first, then the card is built.
        environment_changed(self.environment_id, "deployment")  # e.g. a new pending request

    def record_plan(self, plan_sha256: str, summary: dict, cost: dict | None = None) -> bool:
        """Planning is done: store the plan hash approvals will be bound to and
        the plan's cost estimate (`environments.pricing.combine`), in one
        transaction: a request never awaits approval without its estimate."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.PLANNING:
                return False
            Deployment.objects.filter(pk=self.pk).update(plan_sha256=plan_sha256)
            self.plan_sha256 = plan_sha256
            if cost is not None:  # the audit record keeps the cost approvers are shown
                summary = {**summary, "monthly_cost_usd": cost["monthly_total_usd"],
                           "cost_delta_usd": cost["delta_usd"]}  # fmt: skip
                CostEstimate.objects.update_or_create(deployment=self, defaults={
                    "region": cost["region"], "catalog_version": cost["catalog_version"],
                    "monthly_total_usd": cost["monthly_total_usd"],
                    "previous_monthly_usd": cost["previous_monthly_usd"],
                    "resources": cost["resources"], "not_priced": cost["not_priced"],
                })  # fmt: skip
            audit.record("deployment.planned", self, after={"plan_sha256": plan_sha256, **summary})
            if self.required_approvals:
                self._set_status(Status.AWAITING_APPROVAL, "deployment.awaiting_approval")
            else:
                self._set_status(Status.QUEUED, "deployment.queued", queued_at=timezone.now())
            self.dispatch()
        return True

    def fail_planning(self, error: str) -> bool:
        """planning → failed (the plan job could not produce a plan)."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.PLANNING:
                return False
            self._set_status(
                Status.FAILED, "deployment.failed", finished_at=timezone.now(), error=error[:4000]
            )
        return True

    def start(self, worker_name: str) -> bool:
        """queued → running, unless another deployment holds the environment.

        The partial unique index settles the race between two workers: the
        loser's UPDATE fails and its deployment stays queued. The environment
        row lock comes first: a force-unlock holds it while it runs, and the
        run starts after that.
        """
        now = timezone.now()
        try:
            with transaction.atomic():
                lock_environment(self.environment_id)
                started = Deployment.objects.filter(pk=self.pk, status=Status.QUEUED).update(
                    status=Status.RUNNING, started_at=now, heartbeat_at=now,
                    worker_name=worker_name[:200],
                )  # fmt: skip
                if started:
                    audit.record(
                        "deployment.started",
                        self,
                        before={"status": Status.QUEUED},
                        after={"status": Status.RUNNING, "worker": worker_name},
                    )
                    environment_changed(self.environment_id, "deployment")
        except IntegrityError:
            return False
        if started:
            self.refresh_from_db()
        return bool(started)

    def replan(self, reason: str) -> bool:
        """running → planning: the saved plans went stale before anything ran
        (another run applied to the same Terraform state). The environment is
        free again; the new plan has a new hash, so approvals given for the old
        one no longer count, and the request waits for approval again."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.RUNNING:
                return False
            self._set_status(
                Status.PLANNING, "deployment.replanning", detail={"reason": reason},
                started_at=None, heartbeat_at=None, queued_at=None, worker_name="",
            )  # fmt: skip
            wake_next_queued(self.environment_id)
            self.dispatch()
        return True

    def heartbeat(self) -> bool:
        """Prove the job is alive; returns True when a cancel was requested."""
        Deployment.objects.filter(pk=self.pk, status=Status.RUNNING).update(
            heartbeat_at=timezone.now()
        )
        return Deployment.objects.filter(pk=self.pk, cancel_requested_at__isnull=False).exists()

    def finish(self, status: str, error: str = "") -> bool:
        """running → succeeded | failed | cancelled; wakes the next queued deployment."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.RUNNING:
                return False
            self._set_status(
                status, f"deployment.{status}", finished_at=timezone.now(), error=error[:4000]
            )
            wake_next_queued(self.environment_id)
        return True

    @classmethod
    def fail_stalled(cls, stale_after: timedelta) -> list[int]:
        """Fail running deployments whose job stopped beating (its worker died)."""
        cutoff = timezone.now() - stale_after
        failed = []
        for deployment in cls.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff):
            last = deployment.heartbeat_at
            reason = (
                f"The worker {deployment.worker_name or '?'} stopped responding "
                f"(last heartbeat {last:%Y-%m-%d %H:%M:%S %Z}); the run was abandoned."
            )
            if deployment.finish(Status.FAILED, reason):
                failed.append(deployment.pk)
        return failed

    # -- Terraform state lock -------------------------------------------------------

    def request_force_unlock(self, step_run: StepRun, user, reason: str) -> None:
        """An admin asks to release the Terraform state lock a dead run left
        behind (the lock the failed `step_run` recorded). Checked, marked on
        the step run and audited here; the force_unlock_state job on the high
        queue runs Terraform, whose `init` can take minutes. Refused while any
        deployment runs in the environment (its lock would be live) and while
        an earlier request for the step is in progress."""
        import django_rq

        from deployments import jobs

        environment = self.environment
        if not has_role(user, environment, Role.ADMIN):
            raise Forbidden(f"Only admins of {environment} may force-unlock its Terraform state.")
        reason = (reason or "").strip()
        if not reason:
            raise PolicyError("Say why the lock is dead: the reason is kept in the audit trail.")
        try:
            with transaction.atomic():
                # NOWAIT: while a force-unlock job holds the environment, say so
                # at once rather than keep a web worker waiting on Terraform.
                lock_environment(self.environment_id, nowait=True)
                step_run = StepRun.objects.select_related("unlock_requested_by").get(pk=step_run.pk)
                lock = self._held_state_lock(step_run)
                if step_run.unlock_in_progress:
                    since = timezone.localtime(step_run.unlock_requested_at)
                    raise Conflict(
                        f"{step_run.unlock_requested_by} already asked to force-unlock lock "
                        f"{lock['id']} at {since:%H:%M:%S %Z}; it is in progress and its "
                        "result will appear on this page."
                    )
                self._terraform_step(step_run)
                self._refuse_while_running()
                StepRun.objects.filter(pk=step_run.pk).update(
                    unlock_requested_by=user, unlock_requested_at=timezone.now(),
                    unlock_reason=reason,
                )  # fmt: skip
                audit.record(
                    "terraform.force_unlock_requested",
                    self,
                    actor=user,
                    after={"step": step_run.name, "lock_id": lock["id"], "lock": lock,
                           "reason": reason},
                )  # fmt: skip
                django_rq.get_queue("high").enqueue(jobs.force_unlock_state, step_run.pk)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            raise Conflict(
                f"{environment} is busy right now (a force-unlock is running or a deployment "
                "is starting); try again in a minute."
            ) from None

    def force_unlock_state(self, step_run: StepRun) -> str:
        """Carry out the force-unlock an admin requested for `step_run` (the
        force_unlock_state job). `terraform init` runs outside any transaction;
        then the checks are made again under the environment row lock, held
        through `terraform force-unlock` and the audit event, so no deployment
        starts in between. Written to the log and audited either way; the request's
        mark is cleared either way."""
        from deployments.jobs import step_workdir
        from deployments.logs import LogWriter
        from deployments.runners.base import StepContext, StepFailed
        from deployments.runners.masking import Masker
        from deployments.runners.terraform import StateUnlock

        user, reason = step_run.unlock_requested_by, step_run.unlock_reason
        requested_at = step_run.unlock_requested_at
        environment = self.environment
        masker = Masker(environment.secret_variables)
        recorded = (step_run.outputs or {}).get("lock") or {}
        lock = {key: value for key, value in recorded.items() if key != "unlock_error"}
        lock_id = lock.get("id", "")
        detail = {"step": step_run.name, "lock_id": lock_id, "lock": lock, "reason": reason}
        name = user.get_username() if user is not None else "?"

        writer = LogWriter(self.pk, masker)
        writer.set_step(step_run.pk, step_run.name)
        writer.write(
            f"{name} force-unlocks Terraform state lock {lock_id} "
            f"(held by {lock.get('who', '?')} since {lock.get('created', '?')}): {reason}",
            Stream.SYSTEM,
        )
        try:
            error = ""
            try:
                step = self._terraform_step(step_run)
                workdir = step_workdir(self.pk, step_run.order)
                ctx = StepContext.for_deployment(self, step.config, workdir=workdir, log=writer)
                unlock = StateUnlock(ctx)
                with transaction.atomic():
                    lock_environment(self.environment_id)  # held until the transaction ends
                    self._held_state_lock(StepRun.objects.get(pk=step_run.pk))
                    self._refuse_while_running()
                    unlock.release(lock_id)
                    StepRun.objects.filter(pk=step_run.pk).update(
                        outputs={**step_run.outputs, "lock": {**lock, "released_by": name}},
                        unlock_requested_by=None, unlock_requested_at=None, unlock_reason="",
                    )  # fmt: skip
                    audit.record("terraform.force_unlocked", self, actor=user, after=detail)
            except (PolicyError, StepFailed) as exc:
                error = masker.mask(exc.message)
            except Exception:  # a bug, not the admin's doing: logged with an id to quote
                error_id = uuid.uuid4().hex[:12]
                log.exception("force-unlock of step run %s failed (error id %s)",
                              step_run.pk, error_id)  # fmt: skip
                error = f"Internal error (id {error_id}); see the worker log."
            if not error:
                writer.write(f"State lock {lock_id} released.", Stream.SYSTEM)
                return "unlocked"
            writer.write(f"Force-unlock failed: {error}", Stream.SYSTEM)
            with transaction.atomic():
                # Only this request's mark: a later request may have replaced a lost one.
                StepRun.objects.filter(pk=step_run.pk, unlock_requested_at=requested_at).update(
                    outputs={**step_run.outputs, "lock": {**lock, "unlock_error": error}},
                    unlock_requested_by=None, unlock_requested_at=None, unlock_reason="",
                )  # fmt: skip
                audit.record("terraform.force_unlock_failed", self, actor=user,
                             after={**detail, "error": error})  # fmt: skip
            return "failed"
        finally:
            writer.close()  # its threads must not outlive the job

    def _terraform_step(self, step_run: StepRun):
        """The environment's Terraform step `step_run` ran (the config to unlock with)."""
        step = self.environment.steps.filter(order=step_run.order, kind=StepKind.TERRAFORM).first()
        if step is None:
            raise PolicyError("The environment no longer has this Terraform step.")
        return step

    def _held_state_lock(self, step_run: StepRun) -> dict:
        """The Terraform state lock `step_run` failed on, if nobody released it yet."""
        lock = (step_run.outputs or {}).get("lock") or {}
        lock_id = lock.get("id", "")
        if step_run.deployment_id != self.pk or step_run.kind != StepKind.TERRAFORM or not lock_id:
            raise PolicyError("This step did not fail on a Terraform state lock.")
        if lock.get("released_by"):
            raise PolicyError(f"Lock {lock_id} was already released by {lock['released_by']}.")
        return lock

    def _refuse_while_running(self) -> None:
        """The caller holds the environment row lock, which Deployment.start takes too."""
        if Deployment.objects.filter(
            environment_id=self.environment_id, status=Status.RUNNING
        ).exists():
            raise PolicyError(
                f"A deployment is running in {self.environment}: the lock may be its own. "
                "Wait for it or cancel it first."
            )

    # -- rollback -----------------------------------------------------------------

    @classmethod
    def request_rollback(
        cls, environment: Environment, user=None, reason: str = "", undo: Deployment | None = None
    ) -> Deployment:
        """Bring back the last release that succeeded here before the current one.

        Manual (a user): the environment's rollback policy decides approvals.
        Automatic (no user, `undo` = the failed deployment): no approval, high queue.
        """
        succeeded = cls.objects.filter(environment=environment).succeeded_latest_first()
        if undo is None:
            undo = succeeded.first()
            if undo is None:
                raise PolicyError(f"Nothing has succeeded in {environment} yet; nothing to undo.")
        target = succeeded.exclude(release=undo.release).first()
        if target is None:
            raise PolicyError(
                f"No earlier release succeeded in {environment}; there is nothing to roll back to."
            )
        if user is not None:
            return cls.request(
                target.release, environment, user, reason, kind=Kind.ROLLBACK, rollback_of=undo
            )
        status = initial_status(environment, 0)
        with transaction.atomic():
            deployment = cls.objects.create(
                release=target.release, environment=environment, kind=Kind.ROLLBACK,
                reason=reason or f"Automatic rollback of #{undo.pk}", rollback_of=undo,
                required_approvals=0, status=status,
                queued_at=timezone.now() if status == Status.QUEUED else None,
            )  # fmt: skip
            audit.record(
                "deployment.rollback_started",
                deployment,
                actor_name="gantry",
                after={
                    "release": target.release.version,
                    "undo": undo.pk,
                    "reason": deployment.reason,
                },
            )
            deployment.dispatch()
        return deployment


def lock_environment(environment_id: int, nowait: bool = False) -> None:
    """Hold the environment's row until the transaction ends. Deployment.start
    takes it before a run begins; a force-unlock holds it from its last check
    through `terraform force-unlock`, so no run starts in between. NO KEY:
    rows that merely reference the environment are not held up."""
    Environment.objects.select_for_update(no_key=True, nowait=nowait).filter(
        pk=environment_id
    ).values_list("pk").first()


def wake_next_queued(environment_id: int) -> None:
    """After a run ends, enqueue the oldest deployment waiting for the environment."""
    waiting = (
        Deployment.objects.filter(environment_id=environment_id, status=Status.QUEUED)
        .order_by("queued_at", "id")
        .first()
    )
    if waiting is not None:
        waiting.dispatch()


def with_current_deployment(environments: models.QuerySet) -> models.QuerySet:
    """Annotate each environment with its latest succeeded deployment (what runs now)."""
    latest = Deployment.objects.filter(environment=models.OuterRef("pk")).succeeded_latest_first()
    return environments.annotate(
        current_deployment_id=models.Subquery(latest.values("pk")[:1]),
        current_release_id=models.Subquery(latest.values("release_id")[:1]),
    )


class Approval(models.Model):
    """One person's decision on a deployment, bound to what they saw."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    digest = models.CharField(
        max_length=64, help_text="SHA-256 of the artifacts and plan hash approved."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # One decision per person on each plan of a deployment (a re-plan
            # makes a new digest, on which everyone decides again).
            models.UniqueConstraint(
                fields=["deployment", "user", "digest"], name="approval_one_per_user_and_plan"
            )
        ]

    def counts_for(self, digest: str) -> bool:
        """An approval counts only for exactly what ships (`approval_digest`);
        the queryset form is Deployment.valid_approvals."""
        return self.decision == Decision.APPROVE and self.digest == digest

    def __str__(self) -> str:
        return f"{self.user} {self.decision} #{self.deployment_id}"


class Notification(models.Model):
    """One message to one channel; a row per delivery job.

    About a deployment (approvals), or about an environment (an alarm
    transition, a budget threshold) or the portal itself (a broken audit
    chain), whose text is then stored in `subject`/`body`.
    """

    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    event = models.CharField(max_length=20, choices=NotificationEvent.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipients = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        about = f"#{self.deployment_id}" if self.deployment_id else (self.subject or "portal")
        return f"{self.event} via {self.channel} for {about}"


class StepRun(models.Model):
    """One step of one deployment's run."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="step_runs")
    order = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16)
    phase = models.CharField(max_length=8, default="deploy")  # plan | deploy
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    # An admin's force-unlock of the state lock in `outputs`, accepted and not
    # yet carried out by its job (Deployment.request_force_unlock).
    unlock_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )  # fmt: skip
    unlock_requested_at = models.DateTimeField(null=True, blank=True)
    unlock_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["deployment", "phase", "order"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "phase", "order"], name="steprun_unique_order"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.deployment_id} {self.order}. {self.name}"

    @property
    def unlock_in_progress(self) -> bool:
        """A force-unlock was requested and its job has not ended. Past the high
        queue's job timeout no job can still be at it (it was lost): the
        request may be made again."""
        if self.unlock_requested_at is None:
            return False
        timeout = settings.RQ_QUEUES["high"].get("DEFAULT_TIMEOUT", 180)
        return timezone.now() - self.unlock_requested_at < timedelta(seconds=timeout)


class LogLine(models.Model):
    """A line of a deployment's output, numbered so viewers never miss or repeat one.

    The references carry no database FOREIGN KEY constraint (db_constraint=False):
    PostgreSQL would check each one per inserted row, which was more than half
    the cost of storing a batch, and the check's KEY SHARE lock on the
    deployment row made every batch wait while the row was locked for a state
    change. Lines are written only by the engine for rows it has just loaded,
    and deployments and step runs are never deleted.

    The primary key is the natural one, (deployment, seq): a surrogate id
    meant a sequence value and a second index written for every line, a third
    of what storing a line cost the database (docs/PERFORMANCE.md).
    """

    pk = models.CompositePrimaryKey("deployment", "seq")
    # No index of their own either: the primary key serves every read, and
    # each extra index is written for every line.
    deployment = models.ForeignKey(
        Deployment,
        on_delete=models.CASCADE,
        related_name="log_lines",
        db_constraint=False,
        db_index=False,
    )
    seq = models.PositiveIntegerField()
    step = models.ForeignKey(
        StepRun,
        null=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    stream = models.CharField(max_length=6, choices=Stream.choices, default=Stream.STDOUT)
    text = models.TextField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deployment", "seq"]

    def __str__(self) -> str:
        return f"#{self.deployment_id}:{self.seq} {self.text[:60]}"


class CostEstimate(models.Model):
    """The monthly cost of what a deployment's Terraform plan leaves running,
    priced from the bundled catalog, and its difference to what runs now.

    `resources`: [{"address", "type", "monthly_usd", "previous_monthly_usd",
    "components": [{"name", "unit", "quantity", "unit_price_usd", "monthly_usd",
    "usage_assumed"}]}]; `not_priced`: [{"address", "type", "reason"}].
    """

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, related_name="cost_estimate"
    )
    region = models.CharField(max_length=32)
    monthly_total_usd = models.DecimalField(max_digits=12, decimal_places=2)
    previous_monthly_usd = models.DecimalField(max_digits=12, decimal_places=2)
    resources = models.JSONField(default=list)
    not_priced = models.JSONField(default=list)
    catalog_version = models.CharField(max_length=64)
    # Pages label such an estimate "recorded": nobody should take it for what
    # Gantry's own plan of this deployment said.
    recorded = models.BooleanField(
        default=False,
        help_text="Priced from a saved `terraform show -json`, not from a plan Gantry ran "
        "for this deployment.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.deployment}: ${self.monthly_total_usd}/month"

    @classmethod
    def record_saved_plan(cls, deployment: Deployment, cost: dict, plan: str) -> CostEstimate:
        """Attach the estimate of a saved plan (`plan` names the file; `cost` is
        `environments.pricing.estimate_plan(...).as_json()`) to a deployment
        that has none, marked `recorded` and audited. An estimate already
        there, from Gantry's own plan or an earlier call, is kept."""
        with transaction.atomic():
            estimate, created = cls.objects.get_or_create(deployment=deployment, defaults={
                "region": cost["region"], "catalog_version": cost["catalog_version"],
                "monthly_total_usd": cost["monthly_total_usd"],
                "previous_monthly_usd": cost["previous_monthly_usd"],
                "resources": cost["resources"], "not_priced": cost["not_priced"],
                "recorded": True,
            })  # fmt: skip
            if created:
                audit.record("deployment.cost_recorded", deployment, after={
                    "plan": plan, "region": cost["region"],
                    "monthly_total_usd": cost["monthly_total_usd"],
                    "catalog_version": cost["catalog_version"],
                })  # fmt: skip
                environment_changed(deployment.environment_id, "cost")
        return estimate

    @property
    def delta_usd(self):
        return self.monthly_total_usd - self.previous_monthly_usd
