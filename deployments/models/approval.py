"""Approvals: one person's decision on a deployment, bound to exactly what
they saw (the artifacts and the Terraform plan, `approval_digest`)."""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.db import models
from django.utils import timezone

from deployments.choices import Decision
from portal.core.choices import Role
from portal.core.mfa import Authentication, StepUpRequired
from portal.core.roles import Forbidden, has_role


def approval_digest(artifacts: dict[str, str], plan_sha256: str, policy_sha256: str = "") -> str:
    """What an approval is bound to: the exact images, the Terraform plan and,
    once the plan was checked, the policy files that judged it."""
    bound = {"artifacts": artifacts, "plan_sha256": plan_sha256}
    if policy_sha256:  # unchecked plans keep the digests they always had
        bound["policy_sha256"] = policy_sha256
    content = json.dumps(bound, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


class Approval(models.Model):
    """One person's decision on a deployment, bound to what they saw."""

    deployment = models.ForeignKey(
        "deployments.Deployment", on_delete=models.PROTECT, related_name="approvals"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    digest = models.CharField(
        max_length=64, help_text="SHA-256 of the artifacts and plan hash approved."
    )
    created_at = models.DateTimeField(default=timezone.now)
    # How and when the approver last proved who they are (portal.core.mfa).
    auth_method = models.CharField(max_length=20, blank=True)
    authenticated_at = models.DateTimeField(null=True, blank=True)
    auth_detail = models.JSONField(default=dict, blank=True, help_text="amr, acr from the IdP.")
    rules = models.JSONField(
        default=list, blank=True, help_text="The rules the approver was checked against."
    )

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # One decision per person on each plan of a deployment (a re-plan
            # makes a new digest, on which everyone decides again).
            models.UniqueConstraint(
                fields=["deployment", "user", "digest"], name="approval_one_per_user_and_plan"
            )
        ]

    @staticmethod
    def authentication_fields(authentication: Authentication | None) -> dict:
        if authentication is None:
            return {}
        return {
            "auth_method": authentication.method,
            "authenticated_at": authentication.at,
            "auth_detail": authentication.detail,
        }

    @property
    def authentication(self) -> Authentication | None:
        if not self.auth_method:
            return None
        return Authentication(self.auth_method, self.authenticated_at, self.auth_detail or {})

    def authentication_summary(self) -> dict:
        """How and when the approver authenticated, as the API, the audit trail
        and the evidence pack show it."""
        auth = self.authentication
        if auth is None:
            return {"method": "", "label": "not recorded", "at": None, "strong": False,
                    "amr": [], "acr": ""}  # fmt: skip
        return {
            "method": auth.method,
            "label": auth.label,
            "at": auth.at.isoformat() if auth.at else None,
            "strong": auth.strong,
            "amr": list(auth.detail.get("amr") or []),
            "acr": str(auth.detail.get("acr") or ""),
        }

    def counts_for(self, digest: str) -> bool:
        """An approval counts only for exactly what ships (`approval_digest`);
        the queryset form is Deployment.valid_approvals."""
        return self.decision == Decision.APPROVE and self.digest == digest

    def __str__(self) -> str:
        return f"{self.user} {self.decision} #{self.deployment_id}"


def rules_for(deployment) -> list[str]:
    """The rules an approver of this deployment is held to now, by name:
    what Approval.rules records and the evidence pack lists."""
    env = deployment.environment
    rules = ["requester_may_not_approve", "approver_role"]
    if env.approver_group_id:
        rules.append(f"approver_group:{env.approver_group.name}")
    if env.implementers_may_not_approve:
        rules += ["registrant_may_not_approve", "commit_author_may_not_approve"]
    if env.approval_mfa_minutes:
        rules.append(f"fresh_mfa_within_minutes:{env.approval_mfa_minutes}")
    return rules


def check_approver(deployment, user) -> None:
    """Raise Forbidden, saying why, if `user` may not decide on this deployment."""
    env = deployment.environment
    if deployment.requested_by_id is not None and user.pk == deployment.requested_by_id:
        raise Forbidden("You requested this deployment; someone else must approve it.")
    if env.implementers_may_not_approve:
        release = deployment.release
        if user.pk == release.created_by_id:
            raise Forbidden(
                f"You registered {release.version}; in {env} someone who did not build "
                "the release must approve it (implementers may not approve)."
            )
        if release.commit_author_user_id is not None and user.pk == release.commit_author_user_id:
            raise Forbidden(
                f"You wrote commit {release.commit} of {release.version}; in {env} someone "
                "who did not build the release must approve it (implementers may not approve)."
            )
    if not has_role(user, env, Role.APPROVER):
        raise Forbidden(f"You need the approver role in {env} to decide this.")
    if env.approver_group_id and not user.groups.filter(pk=env.approver_group_id).exists():
        # A group a policy asked to approve (finance on a cost increase) may.
        check = deployment.policy()
        asked = [wanted["group"] for wanted in check.extra_approvals] if check else []
        if not asked or not user.groups.filter(name__in=asked).exists():
            raise Forbidden(f"Only members of {env.approver_group.name} may approve in {env}.")


def check_fresh_authentication(deployment, authentication: Authentication | None) -> None:
    """Raise StepUpRequired unless the approver's last strong authentication
    is as fresh as the environment asks (approval_mfa_minutes)."""
    minutes = deployment.environment.approval_mfa_minutes
    if not minutes or (authentication is not None and authentication.fresh(minutes)):
        return
    env = deployment.environment
    if authentication is not None and authentication.method == "api_token":
        raise StepUpRequired(
            f"Approvals in {env} need a strong authentication (MFA) at most {minutes} "
            "minutes old, which an API token cannot prove. Approve in the browser: "
            f"{settings.PORTAL_URL.rstrip('/')}/deployments/{deployment.pk}/",
            minutes=minutes,
        )
    raise StepUpRequired(
        f"Approvals in {env} need a strong authentication (MFA) at most {minutes} minutes "
        "old: confirm your identity again, then approve.",
        minutes=minutes,
    )
