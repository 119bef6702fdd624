"""What the policies in `policies/` said about a deployment's plan, and the
decision that got past them.

The plan job evaluates every Terraform plan of a deployment
(`evaluate_plans`) and stores one PolicyCheck with it. The deployment then
waits for its approvals as usual, but is released only when its check is
*cleared*:

- `pass` / `warn`: nothing blocks (advisory findings are shown).
- `override_required` (a soft-mandatory violation): an admin of the
  environment, not the requester, overrides it with a typed reason.
- `blocked` (a hard-mandatory violation): only a new plan, or the
  environment's audited break-glass override (environments.FreezeOverride)
  gets past it.

A policy that asks for more approvals (`extra_approvals`, e.g. finance on a
cost increase) raises the quorum: Deployment.approvals_needed.

The check's `policy_sha256` is part of what approvals bind to
(approval_digest): approving a plan under other policy files does not count.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from environments import plan_policy
from environments.plan_policy import LEVEL_RANK, Level, Outcome
from portal.core import audit
from portal.core.choices import Role
from portal.core.roles import Conflict, Forbidden, PolicyError, has_role

REASON_MAX = 2000
OUTCOME_LABELS = [
    (Outcome.PASS.value, "Pass"),
    (Outcome.WARN.value, "Advisory findings"),
    (Outcome.OVERRIDE_REQUIRED.value, "Override required"),
    (Outcome.BLOCKED.value, "Blocked"),
]


class PolicyCheck(models.Model):
    """The policies' verdict on one deployment's plan."""

    deployment = models.OneToOneField(
        "deployments.Deployment", on_delete=models.CASCADE, related_name="policy_check"
    )
    outcome = models.CharField(max_length=20, choices=OUTCOME_LABELS)
    # [{"policy", "level", "message", "address", "step"}], worst first.
    violations = models.JSONField(default=list)
    # [{"policy", "group", "count", "message"}]
    extra_approvals = models.JSONField(default=list)
    policy_sha256 = models.CharField(max_length=64)
    evaluated_at = models.DateTimeField(default=timezone.now)
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )  # fmt: skip
    override_reason = models.TextField(blank=True)
    overridden_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"policy check of deployment {self.deployment_id}: {self.outcome}"

    @property
    def overridden(self) -> bool:
        return self.overridden_at is not None

    def cleared(self, environment) -> bool:
        """May the deployment be released, as far as the policies go?"""
        if self.outcome in (Outcome.PASS, Outcome.WARN):
            return True
        if self.outcome == Outcome.OVERRIDE_REQUIRED:
            return self.overridden
        return environment.active_override() is not None  # blocked: break-glass only

    def refuse_if_blocked(self, environment) -> None:
        """A hard-mandatory violation refuses approvals, unless break-glass is on."""
        if self.outcome == Outcome.BLOCKED and not self.cleared(environment):
            raise PolicyError(
                f"Policy blocks this plan: {self.summary().rstrip('.')}. Change the plan and "
                "request again, or ask an admin for a break-glass override."
            )

    def groups_satisfied(self, approvals) -> bool:
        """Has each group a policy asked for approved as often as it asked?"""
        return all(
            approvals.filter(user__groups__name=wanted["group"]).count() >= wanted["count"]
            for wanted in self.extra_approvals
        )

    def blocking(self) -> list[dict]:
        """The violations that stop the deployment (soft and hard mandatory)."""
        return [v for v in self.violations if v["level"] != Level.ADVISORY]

    def summary(self) -> str:
        """One line for errors and notifications: the worst violations, named."""
        shown = [f"{v['policy']}: {v['message']}" for v in self.blocking()[:3]]
        more = len(self.blocking()) - len(shown)
        return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")

    def as_dict(self) -> dict:
        """The API's and the evidence pack's shape."""
        return {
            "outcome": self.outcome,
            "violations": self.violations,
            "extra_approvals": self.extra_approvals,
            "policy_sha256": self.policy_sha256,
            "evaluated_at": self.evaluated_at.isoformat(),
            "override": (
                {
                    "by": self.overridden_by.get_username(),
                    "reason": self.override_reason,
                    "at": self.overridden_at.isoformat(),
                }
                if self.overridden
                else None
            ),
        }


def policy_context(deployment, cost: dict | None, now=None) -> dict:
    """The `context` of the policies' input for this deployment (docs/POLICIES.md)."""
    environment = deployment.environment
    override = environment.active_override()
    return {
        "application": environment.application.slug,
        "environment": environment.slug,
        "tier": environment.tier,
        "release": deployment.release.version,
        "requester": (
            deployment.requested_by.get_username() if deployment.requested_by else "gantry"
        ),
        "cost": _cost_of(cost),
        "cost_increase_limit_usd": environment.cost_increase_limit_usd,
        "cost_approval_group": (
            environment.cost_approval_group.name if environment.cost_approval_group_id else None
        ),
        "now": now or timezone.now(),
        "freeze_override_active": override is not None,
    }


def _cost_of(cost: dict | None) -> dict | None:
    if not cost or cost.get("error") or "monthly_total_usd" not in cost:
        return None
    return {key: Decimal(str(cost[key])) for key in plan_policy.COST_KEYS}


def evaluate_plans(plans: list[tuple[str, dict]], context: dict) -> dict:
    """Judge each Terraform step's plan ((step name, `terraform show -json`))
    and fold the verdicts into one: worst outcome, every violation (with its
    step), each group's extra approvals once (the largest count). Raises
    plan_policy.PlanDocumentError / PolicyBundleError as `evaluate` does."""
    violations, extra, digests = [], {}, set()
    for step, plan in plans:
        evaluation = plan_policy.evaluate(plan, context, policy_dir=settings.POLICY_DIR)
        digests.add(evaluation.policy_sha256)
        violations += [{**v.as_dict(), "step": step} for v in evaluation.violations]
        for wanted in evaluation.extra_approvals:
            known = extra.get(wanted.group)
            if known is None or wanted.count > known["count"]:
                extra[wanted.group] = wanted.as_dict()
    violations.sort(key=lambda v: (-LEVEL_RANK[Level(v["level"])], v["policy"],
                                   v["address"] or "", v["message"]))  # fmt: skip
    outcome = plan_policy.outcome_of(
        [plan_policy.Violation(v["policy"], Level(v["level"]), v["message"], v["address"])
         for v in violations]
    )  # fmt: skip
    return {
        "outcome": outcome.value,
        "violations": violations,
        "extra_approvals": sorted(extra.values(), key=lambda e: e["group"]),
        # One bundle for all steps (files do not change in a job); sorted for safety.
        "policy_sha256": sorted(digests)[0] if len(digests) == 1 else _joined(digests),
    }


def _joined(digests: set[str]) -> str:
    return hashlib.sha256(",".join(sorted(digests)).encode()).hexdigest()


def store(deployment, verdict: dict | None) -> PolicyCheck | None:
    """Keep the plan job's verdict (the caller holds the deployment's row lock);
    a new plan replaces the old verdict and any override of it."""
    if verdict is None:
        PolicyCheck.objects.filter(deployment=deployment).delete()
        deployment.policy_check = None
        return None
    check, _ = PolicyCheck.objects.update_or_create(
        deployment=deployment,
        defaults={
            **verdict, "evaluated_at": timezone.now(), "overridden_by": None,
            "override_reason": "", "overridden_at": None,
        },
    )  # fmt: skip
    deployment.policy_check = check
    audit.record("deployment.policy_evaluated", deployment, after=verdict)
    return check


def override_policy(deployment, user, reason: str) -> PolicyCheck:
    """awaiting approval, soft-mandatory violations: an admin of the
    environment, not the requester, lets them pass with a typed reason
    (audited; named on the approval page and in the evidence pack). Releases
    the deployment if its approvals are already in."""
    if deployment.expire():
        raise PolicyError("This request has expired; request the deployment again.")
    with transaction.atomic():
        deployment.lock_awaiting_approval()
        check = deployment.policy()
        reason = check_override(deployment, check, user, reason)
        now = timezone.now()
        PolicyCheck.objects.filter(pk=check.pk).update(
            overridden_by=user, override_reason=reason, overridden_at=now
        )
        check.overridden_by, check.override_reason, check.overridden_at = user, reason, now
        audit.record(
            "deployment.policy_overridden",
            deployment,
            actor=user,
            after={"reason": reason, "policy_sha256": check.policy_sha256,
                   "violations": check.blocking()},
        )  # fmt: skip
        deployment.tell_viewers()
        deployment._release_if_ready(user, deployment.valid_approvals().select_related("user"))
    return check


def check_override(deployment, check: PolicyCheck | None, user, reason: str) -> str:
    """Raise, saying why, unless `user` may override this check now with this
    reason; returns the cleaned reason."""
    check_overrider(deployment, check, user)
    reason = " ".join((reason or "").split())
    if not reason:
        raise PolicyError("Say why the policy may be overridden; the reason is audited.",
                          field="reason")  # fmt: skip
    if len(reason) > REASON_MAX:
        raise PolicyError(f"Keep the reason under {REASON_MAX} characters.", field="reason")
    return reason


def check_overrider(deployment, check: PolicyCheck | None, user) -> None:
    """Raise, saying why, unless `user` may override this check now (the
    rules alone, for the page to offer the form)."""
    environment = deployment.environment
    if check is None or check.outcome != Outcome.OVERRIDE_REQUIRED:
        if check is not None and check.outcome == Outcome.BLOCKED:
            raise PolicyError(
                "A hard-mandatory policy blocks this plan; no one can override it. "
                "Change the plan and request again, or ask an admin for a break-glass override."
            )
        raise Conflict("This deployment's plan needs no policy override.")
    if check.overridden:
        raise Conflict(f"{check.overridden_by.get_username()} already overrode the policies.")
    if deployment.requested_by_id is not None and user.pk == deployment.requested_by_id:
        raise Forbidden("You requested this deployment; an admin of the environment must "
                        "decide on its policy override.")  # fmt: skip
    if not has_role(user, environment, Role.ADMIN):
        raise Forbidden(f"Only admins of {environment} may override a policy there.")
