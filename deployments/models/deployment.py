"""Deployments and their approvals: the four-eyes rules live here.

State changes go through the methods on Deployment. Each one takes the row
lock or makes a conditional UPDATE, checks the rules again under that lock,
and writes its audit event in the same transaction, so two people clicking at
once can never double-count an approval or skip a rule. Jobs are enqueued by
dotted path after the transaction commits (django-rq's on-commit mode).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from deployments.choices import (
    OPEN_STATUSES,
    Decision,
    Kind,
    NotificationEvent,
    Status,
)
from deployments.models import emergency
from deployments.models.approval import (
    Approval,
    approval_digest,
    check_approver,
    check_fresh_authentication,
    rules_for,
)
from deployments.models.notification import announce
from deployments.models.policy import PolicyCheck, override_policy
from deployments.models.policy import store as store_policy_check
from deployments.models.promotion import promotion_source
from deployments.models.queueing import check_queue, enqueue_on_commit, job_id
from deployments.models.release import Release, artifacts_with_services
from deployments.models.run import CostEstimate
from deployments.viewers import broadcast_status
from environments.choices import StepKind
from environments.live import environment_changed
from environments.models import Environment, FreezeOverride
from portal.core import audit
from portal.core.choices import Role
from portal.core.indexes import NullsLastIndex
from portal.core.mfa import Authentication
from portal.core.prepared import prepared
from portal.core.roles import Conflict, Forbidden, PolicyError, has_role

log = logging.getLogger(__name__)

# Where a request may still wait for its window to open (and expire when it closes).
WINDOW_STATUSES = (Status.PLANNING, Status.AWAITING_APPROVAL, Status.QUEUED)
PLAN_JOB = "deployments.jobs.plan_deployment"
RUN_JOB = "deployments.jobs.run_deployment"
# Job id prefixes (deployments/models/queueing.py): the sweeper reads them back.
PLAN_JOB_PREFIX = "plan"
RUN_JOB_PREFIX = "run"


def initial_status(environment: Environment, required_approvals: int) -> str:
    """Plan first when the process has Terraform steps: approvers see the plan."""
    if environment.steps.filter(kind=StepKind.TERRAFORM).exists():
        return Status.PLANNING
    return Status.AWAITING_APPROVAL if required_approvals else Status.QUEUED


class DeploymentQuerySet(models.QuerySet):
    def latest_first(self) -> DeploymentQuerySet:
        """The latest to finish first (one without a finish time last, whatever
        the database's NULL order), then the latest created."""
        return self.order_by(models.F("finished_at").desc(nulls_last=True), "-id")

    def succeeded_latest_first(self) -> DeploymentQuerySet:
        """Succeeded deployments, what runs now first: the latest to finish
        (one without a finish time last, whatever the database's NULL order),
        then the latest created. The one rule for "current" everywhere."""
        return self.filter(status=Status.SUCCEEDED).latest_first()

    def runs_now(self) -> Deployment | None:
        """What runs now (the first of succeeded_latest_first()), with its release."""
        return self.succeeded_latest_first().select_related("release").first()


def runs_now_in(environment: Environment) -> Deployment | None:
    """environment.deployments.runs_now(), for the pages that read it on every
    request: compiled once (portal/core/prepared.py)."""
    running = _runs_now.of(environment)
    return running[0] if running else None


@prepared(environment_id=int)
def _runs_now(environment_id: int) -> models.QuerySet:
    return (
        Deployment.objects.filter(environment_id=environment_id)
        .succeeded_latest_first()
        .select_related("release")[:1]
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
    # Set on a forward deployment once a rollback replaced its release here:
    # from then on it is no default rollback target and does not count for the
    # promotion rule of the next environment (deployments/rollback.py).
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="rolled_away"
    )
    # What the image registries said when it was requested (Release.check_images).
    image_checks = models.JSONField(default=list, blank=True)
    # The previous environment's run that satisfied require_previous_success.
    promoted_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="promotions"
    )
    freeze_override = models.ForeignKey(
        FreezeOverride, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # What ran here when it was requested, and again when it started: the diff
    # its page shows after the fact is against this, not against itself.
    compared_with = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The requested window (deployments/models/emergency.py): starts no sooner, expires after.
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    # Released through break-glass or a policy override: reviewed after it ran.
    emergency = models.BooleanField(default=False)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_comment = models.TextField(blank=True)
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
            # latest_first() order within an environment: what runs there now,
            # its last run and the run a rollback undoes are each read by an
            # ordered scan that stops at the first match. The index above
            # sorts NULLs first on DESC, so PostgreSQL sorted every run instead.
            NullsLastIndex(
                models.F("environment"),
                models.F("finished_at").desc(nulls_last=True),
                models.F("id").desc(),
                name="deployment_env_latest_first",
            ),
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
        check = self.policy()
        return approval_digest(
            self.artifact_map(), self.plan_sha256, check.policy_sha256 if check else ""
        )

    def policy(self) -> PolicyCheck | None:
        """What the policies said about the current plan; None: not checked
        (no Terraform step, or planned before policies were checked)."""
        try:
            return self.policy_check
        except PolicyCheck.DoesNotExist:
            return None

    def approvals_needed(self) -> int:
        """The environment's quorum, plus what the policies asked for."""
        check = self.policy()
        extra = sum(wanted["count"] for wanted in check.extra_approvals) if check else 0
        return self.required_approvals + extra

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
        not_before=None,
        not_after=None,
    ) -> Deployment:
        """Create a deployment request after checking every rule that applies;
        `not_before`/`not_after` (aware datetimes) name the window it may start in."""
        # The rules as they stand now, not as the caller's copy last read them.
        environment = Environment.objects.get(pk=environment.pk)
        if not has_role(user, environment, Role.DEPLOYER):
            raise Forbidden(f"You need the deployer role in {environment} to request this.")
        if release.application_id != environment.application_id:
            raise PolicyError(
                f"{release} belongs to another application than {environment}.", field="release"
            )
        reason = (reason or "").strip()
        if not reason:
            raise PolicyError("Say why this deployment is needed.", field="reason")
        emergency.check_window(not_before, not_after)
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
        promoted_from = None
        if environment.require_previous_success and kind == Kind.DEPLOY:
            promoted_from = cls.promotion_source(release, environment)
        image_checks = release.verified_images(environment) if kind == Kind.DEPLOY else []
        # Before anything is written: with the queue down the job could not be
        # enqueued, so the request is refused (503) rather than left waiting.
        check_queue(queue_for(kind))
        with transaction.atomic():
            # Lock the environment row so freeze, override and duplicate checks
            # and the insert happen as one step.
            env = Environment.objects.select_for_update().get(pk=environment.pk)
            override = None
            freeze = env.active_freeze()
            if freeze is not None:
                override = env.active_override()
                if override is None:
                    raise PolicyError(
                        f"{env.frozen_until_text(freeze)}. "
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
                promoted_from=promoted_from,
                image_checks=image_checks,
                not_before=not_before,
                not_after=not_after,
                compared_with=cls.objects.filter(environment=env).succeeded_latest_first().first(),
                emergency=override is not None,
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
                    "promoted_from": promoted_from.pk if promoted_from else None,
                    "image_checks": image_checks,
                    "not_before": not_before.isoformat() if not_before else None,
                    "not_after": not_after.isoformat() if not_after else None,
                },
            )
            deployment.dispatch()
        return deployment

    @classmethod
    def promotion_source(cls, release: Release, environment: Environment) -> Deployment | None:
        """The previous environment's run that lets `release` come here
        (deployments/models/current.py)."""
        return promotion_source(cls.objects.all(), release, environment)

    # -- approving --------------------------------------------------------------

    def lock_awaiting_approval(self) -> None:
        """Take the row lock and refuse (Conflict) unless it still awaits approval."""
        self._lock()
        if self.status != Status.AWAITING_APPROVAL:
            raise Conflict(
                f"This deployment is {self.get_status_display().lower()}, not awaiting approval."
            )

    def _lock(self) -> None:
        """Take the row lock, then reload: every rule is checked on fresh data."""
        Deployment.objects.select_for_update().filter(pk=self.pk).values_list("pk").first()
        self.refresh_from_db()

    def approval_rules(self) -> list[str]:
        """The rules an approver is held to now, by name (approval.rules_for)."""
        return rules_for(self)

    def check_approver(self, user) -> None:
        """Raise Forbidden, saying why, if `user` may not decide (approval.check_approver)."""
        check_approver(self, user)

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
        self.tell_viewers()

    def tell_viewers(self) -> None:
        """After the commit, open pages of this deployment fetch their panels again
        (an approval, an override or a review changes them without a new status)."""
        pk, status = self.pk, self.status
        transaction.on_commit(lambda: broadcast_status(pk, status))

    def _second_group_satisfied(self, approvals) -> bool:
        group_id = self.environment.second_approver_group_id
        if not group_id:
            return True
        return approvals.filter(user__groups__id=group_id).exists()

    def check_authentication(self, authentication: Authentication | None) -> None:
        """StepUpRequired unless fresh enough (approval.check_fresh_authentication)."""
        check_fresh_authentication(self, authentication)

    def approve(
        self,
        user,
        comment: str = "",
        authentication: Authentication | None = None,
        seen_digest: str = "",
    ) -> Approval:
        """Record user's approval; release the deployment when the policy is met.
        `authentication` is how and when the approver proved who they are; the
        approval keeps it, and an environment with a fresh-MFA rule checks it.
        `seen_digest` is the approval digest the approver was shown: when the
        plan (or images, or policies) changed since, the approval is refused."""
        # Expire in a transaction of its own, so the refusal below cannot undo it.
        if self.expire():
            raise PolicyError("This request has expired; request the deployment again.")
        with transaction.atomic():
            self.lock_awaiting_approval()
            if timezone.now() >= self.expires_at:
                raise PolicyError("This request has expired; request the deployment again.")
            self.check_approver(user)
            if check := self.policy():
                check.refuse_if_blocked(self.environment)
            # The release's artifacts never change: read once for the digests
            # and the audit event below instead of once for each.
            prefetch_related_objects([self.release], artifacts_with_services())
            digest = self.approval_digest()
            if seen_digest and seen_digest != digest:
                raise Conflict(
                    "The plan changed since you looked: what you saw is no longer what would "
                    "ship. Read the new plan below, then decide again."
                )
            # Once per person and plan: after a re-plan (a new digest) the
            # approvers decide again on what will now ship.
            if self.approvals.filter(user=user, digest=digest).exists():
                raise Conflict("You have already decided on this deployment.")
            self.check_authentication(authentication)
            approval = Approval.objects.create(
                deployment=self, user=user, decision=Decision.APPROVE,
                comment=(comment or "").strip(), digest=digest, rules=self.approval_rules(),
                **Approval.authentication_fields(authentication),
            )  # fmt: skip
            self.tell_viewers()
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
                    "required": self.approvals_needed(),
                    "comment": approval.comment,
                    "authentication": approval.authentication_summary(),
                    "rules": approval.rules,
                },
            )
            self._release_if_ready(user, valid, count)
        return approval

    def _release_if_ready(self, actor, valid, count: int | None = None) -> bool:
        """awaiting approval → queued once the quorum, the groups and the
        policies are all satisfied (the caller holds the row lock; `count`,
        when it has counted `valid` under it)."""
        if (valid.count() if count is None else count) < self.approvals_needed():
            return False
        if not self._second_group_satisfied(valid):
            return False
        check = self.policy()
        if check and not (check.groups_satisfied(valid) and check.cleared(self.environment)):
            return False  # more approvals, or an admin's override (or break-glass), later
        freeze = self.environment.active_freeze()
        if freeze and not self.environment.active_override():
            raise PolicyError(
                f"{self.environment.frozen_until_text(freeze)}; approve again after the "
                "freeze, or once an admin's break-glass override is active."
            )
        detail = {"approvers": sorted(a.user.get_username() for a in valid)}
        if check and check.outcome == "blocked":  # let through by break-glass: say which
            detail["policy_break_glass"] = self.environment.active_override().pk
        past_policy = bool(check and (check.overridden or check.outcome == "blocked"))
        self._set_status(
            Status.QUEUED, "deployment.queued", actor=actor, detail=detail,
            queued_at=timezone.now(), emergency=self.emergency or past_policy,
        )  # fmt: skip
        # The run job first: on-commit hooks enqueue in this order.
        self.dispatch()
        announce(self, NotificationEvent.APPROVED)
        return True

    def review_emergency(self, user, comment: str) -> None:
        """The post-implementation review of an emergency change (emergency.review)."""
        emergency.review(self, user, comment)

    @property
    def review_due_by(self):
        return emergency.review_due_by(self)

    def override_policy(self, user, reason: str) -> PolicyCheck:
        """An environment admin lets soft-mandatory violations pass (policy.override)."""
        return override_policy(self, user, reason)

    def reject(
        self, user, comment: str = "", authentication: Authentication | None = None
    ) -> Approval:
        """A rejection by any eligible approver ends the request. It needs no
        fresh MFA (stopping a change is always safe), but records how the
        rejecter signed in like an approval does."""
        with transaction.atomic():
            self.lock_awaiting_approval()
            self.check_approver(user)
            comment = (comment or "").strip()
            if not comment:
                raise PolicyError("Say why you reject this deployment.", field="comment")
            digest = self.approval_digest()
            if self.approvals.filter(user=user, digest=digest).exists():
                raise Conflict("You have already decided on this deployment.")
            approval = Approval.objects.create(
                deployment=self, user=user, decision=Decision.REJECT,
                comment=comment, digest=digest, rules=self.approval_rules(),
                **Approval.authentication_fields(authentication),
            )  # fmt: skip
            self._set_status(
                Status.REJECTED,
                "deployment.rejected",
                actor=user,
                detail={"comment": comment, "digest": approval.digest},
                finished_at=timezone.now(),
            )
            announce(self, NotificationEvent.REJECTED)
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
        """Expire a request past its approval window (the housekeeping job, and
        before each decision). Inside its window, the usual case, no lock is
        taken: the window only closes, and the decision checks it again under
        the lock."""
        if timezone.now() < self.expires_at:
            return False
        with transaction.atomic():
            self._lock()
            return self._expire_if_stale()

    # -- running (called by the jobs in deployments/jobs.py) ----------------------

    def expire_window(self) -> bool:
        """Not started and its window closed: → expired, saying so."""
        if not emergency.window_closed(self) or self.status not in WINDOW_STATUSES:
            return False
        with transaction.atomic():
            self._lock()
            if not emergency.window_closed(self) or self.status not in WINDOW_STATUSES:
                return False
            self._set_status(
                Status.EXPIRED, "deployment.expired", finished_at=timezone.now(),
                error=f"Its window closed at {self.not_after:%Y-%m-%d %H:%M %Z} before it "
                "could start; request it again with a new window.",
            )  # fmt: skip
        return True

    @property
    def queue_name(self) -> str:
        return queue_for(self.kind)

    def dispatch(self) -> None:
        """Hand the deployment to whoever acts next; jobs enqueue after commit.
        A job lost on the way (Redis down at commit, or restarted empty) is
        enqueued again by jobs.wake_waiting_deployments."""
        # Jobs by name: the jobs stand on the models, not under them.
        if self.status == Status.PLANNING:
            enqueue_on_commit(
                self.queue_name, PLAN_JOB, self.pk, job_id=job_id(PLAN_JOB_PREFIX, self.pk)
            )
        elif self.status == Status.QUEUED:
            enqueue_on_commit(
                self.queue_name, RUN_JOB, self.pk, job_id=job_id(RUN_JOB_PREFIX, self.pk)
            )
        elif self.status == Status.AWAITING_APPROVAL:
            announce(self, NotificationEvent.APPROVAL_NEEDED)
        # After the enqueue: on commit, the job goes first, then the card is built.
        environment_changed(self.environment_id, "deployment")  # e.g. a new pending request

    def record_plan(
        self,
        plan_sha256: str,
        summary: dict,
        cost: dict | None = None,
        planner: str = "",
        policy: dict | None = None,
    ) -> bool:
        """Planning is done: store the plan hash approvals will be bound to,
        the plan's cost estimate (`environments.pricing.combine`) and the
        policies' verdict (deployments.models.policy), in one transaction: a
        request never awaits approval without them. With `planner`, only
        while that worker still holds the plan's claim."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.PLANNING or (planner and self.worker_name != planner):
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
            check = store_policy_check(self, policy)
            # The plan's claim ends here (start() sets its own heartbeat).
            if self.approvals_needed() or (check and not check.cleared(self.environment)):
                self._set_status(
                    Status.AWAITING_APPROVAL, "deployment.awaiting_approval",
                    heartbeat_at=None, worker_name="",
                )  # fmt: skip
            else:
                self._set_status(
                    Status.QUEUED, "deployment.queued", queued_at=timezone.now(),
                    heartbeat_at=None, worker_name="",
                )  # fmt: skip
            self.dispatch()
        return True

    def fail_planning(self, error: str, planner: str = "") -> bool:
        """planning → failed (the plan job could not produce a plan); with
        `planner`, only while that worker still holds the plan's claim."""
        with transaction.atomic():
            self._lock()
            if self.status != Status.PLANNING or (planner and self.worker_name != planner):
                return False
            self._set_status(
                Status.FAILED, "deployment.failed", finished_at=timezone.now(),
                error=error[:4000], heartbeat_at=None, worker_name="",
            )  # fmt: skip
        return True

    def claim_planning(self, worker_name: str, stale_after: timedelta) -> bool:
        """Take the plan: one worker plans a request at a time. The claim is
        the heartbeat the planning job beats (as a run's); one whose heartbeat
        is older than `stale_after` belonged to a dead worker and is taken
        over. A conditional UPDATE settles two jobs racing for it."""
        now = timezone.now()
        claimed = (
            Deployment.objects.filter(pk=self.pk, status=Status.PLANNING)
            .filter(
                models.Q(heartbeat_at__isnull=True) | models.Q(heartbeat_at__lt=now - stale_after)
            )
            .update(worker_name=worker_name[:200], heartbeat_at=now)
        )
        if claimed:
            self.worker_name, self.heartbeat_at = worker_name[:200], now
        return bool(claimed)

    def start(self, worker_name: str) -> bool:
        """queued → running, unless another deployment holds the environment.

        The partial unique index settles the race between two workers: the
        loser's UPDATE fails and its deployment stays queued. The environment
        row lock comes first: a force-unlock holds it while it runs, and so
        does `finish` while it ends the run before this one, so a start is
        stamped after the end it waited for.
        """
        if emergency.waits_for_window(self) or self.expire_window():
            return False
        try:
            with transaction.atomic():
                lock_environment(self.environment_id)
                now = timezone.now()
                running_before = (
                    Deployment.objects.filter(environment_id=self.environment_id)
                    .succeeded_latest_first()
                    .first()
                )
                started = Deployment.objects.filter(pk=self.pk, status=Status.QUEUED).update(
                    status=Status.RUNNING, started_at=now, heartbeat_at=now,
                    worker_name=worker_name[:200], compared_with=running_before,
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
        """Prove the job (a plan or a run) is alive; returns True when it
        should stop: a cancel was requested, or the row is no longer its own
        (the stalled-run check failed it while the database was out of reach,
        or another worker took over a plan whose claim went stale)."""
        beaten = Deployment.objects.filter(
            pk=self.pk, status__in=(Status.PLANNING, Status.RUNNING), worker_name=self.worker_name
        ).update(heartbeat_at=timezone.now())
        if not beaten:
            return True
        return Deployment.objects.filter(pk=self.pk, cancel_requested_at__isnull=False).exists()

    def finish(self, status: str, error: str = "") -> bool:
        """running → succeeded | failed | cancelled; wakes the next queued deployment.
        Holds the environment's row lock (before its own, as every path takes
        them) so the next run's start comes after this end."""
        with transaction.atomic():
            lock_environment(self.environment_id)
            self._lock()
            if self.status != Status.RUNNING:
                return False
            self._set_status(
                status, f"deployment.{status}", finished_at=timezone.now(), error=error[:4000]
            )
            if status == Status.SUCCEEDED and self.kind == Kind.ROLLBACK:
                self.mark_rolled_away()
            wake_next_queued(self.environment_id)
        return True

    def mark_rolled_away(self) -> list[int]:
        """This rollback succeeded: the release it replaced is marked rolled away
        from here (the run it undid, and every forward success of that release
        not marked yet), audited. Returns the marked deployments' ids."""
        undone = self.rollback_of
        if undone is None or undone.release_id == self.release_id:
            return []  # a retried rollback to the same release replaced nothing
        replaced = Deployment.objects.filter(
            environment_id=self.environment_id, release_id=undone.release_id,
            kind=Kind.DEPLOY, rolled_back_at__isnull=True,
        ).filter(models.Q(status=Status.SUCCEEDED) | models.Q(pk=undone.pk))  # fmt: skip
        marked = sorted(replaced.values_list("pk", flat=True))
        if marked:
            replaced.update(rolled_back_at=timezone.now(), rolled_back_by=self)
            audit.record(
                "release.rolled_back",
                undone.release,
                environment=self.environment_id,
                after={"release": undone.release.version, "by_deployment": self.pk,
                       "deployments": marked, "back_to": self.release.version},
            )  # fmt: skip
        return marked


def queue_for(kind: str) -> str:
    """Rollbacks (and their plans) go first: the `high` queue."""
    return "high" if kind == Kind.ROLLBACK else "default"


def lock_environment(environment_id: int, nowait: bool = False) -> None:
    """Hold the environment's row until the transaction ends. Deployment.start
    takes it before a run begins; a force-unlock holds it from its last check
    through `terraform force-unlock`, so no run starts in between. NO KEY:
    rows that merely reference the environment are not held up."""
    Environment.objects.select_for_update(no_key=True, nowait=nowait).filter(
        pk=environment_id
    ).values_list("pk").first()


def wake_next_queued(environment_id: int, skip: Iterable[int] = ()) -> bool:
    """After a run ends, enqueue the oldest deployment waiting for the
    environment, unless it is in `skip` (its job waits in a queue already)."""
    now = timezone.now()
    waiting = (
        Deployment.objects.filter(environment_id=environment_id, status=Status.QUEUED)
        .filter(models.Q(not_before__isnull=True) | models.Q(not_before__lte=now))
        .order_by("queued_at", "id")
        .first()
    )
    if waiting is None or waiting.pk in skip:
        return False
    waiting.dispatch()
    return True
