"""Scheduled and emergency changes.

A request may name a window: `not_before` (once approved it waits queued
until then) and `not_after` (if it has not started by then it expires,
saying so). `check_window` is what Deployment.request checks; the engine
starts a queued deployment only inside its window (Deployment.start,
wake_next_queued) and the housekeeping expires one whose window closed.

A deployment that went ahead through a break-glass freeze override or a
policy override (or a hard policy block lifted by break-glass) is an
**emergency change** (`Deployment.emergency`, set when it is released). Once
it has run, an approver or admin of the environment who took no part in it
reviews it within EMERGENCY_REVIEW_HOURS (DORA RTS Art. 17, SOC 2 CC8.1):
`review`. Until then the dashboard shows it and the evidence pack says so.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deployments.choices import Status
from environments.models import FreezeOverride
from portal.core import audit
from portal.core.choices import Role
from portal.core.models import AuditEvent
from portal.core.roles import Conflict, Forbidden, PolicyError, has_role

# A window further ahead than this is more likely a typo than a plan.
MAX_LEAD = timedelta(days=30)
COMMENT_MAX = 2000
REVIEWABLE = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


def check_window(not_before: datetime | None, not_after: datetime | None, now=None) -> None:
    """Raise PolicyError naming the field unless the window makes sense."""
    now = now or timezone.now()
    for name, moment in (("not_before", not_before), ("not_after", not_after)):
        if moment is not None and timezone.is_naive(moment):
            raise PolicyError("Give the time with its time zone (e.g. 2026-12-07T02:00Z).",
                              field=name)  # fmt: skip
    if not_before is not None and not_before > now + MAX_LEAD:
        raise PolicyError("A deployment can be scheduled at most 30 days ahead.",
                          field="not_before")  # fmt: skip
    if not_after is not None:
        if not_after <= now:
            raise PolicyError("The window must end in the future.", field="not_after")
        if not_before is not None and not_after <= not_before:
            raise PolicyError("The window must end after it begins.", field="not_after")


def window_closed(deployment, now=None) -> bool:
    now = now or timezone.now()
    return deployment.not_after is not None and now > deployment.not_after


def waits_for_window(deployment, now=None) -> bool:
    now = now or timezone.now()
    return deployment.not_before is not None and now < deployment.not_before


def review_due_by(deployment) -> datetime | None:
    if not deployment.emergency or deployment.finished_at is None:
        return None
    return deployment.finished_at + timedelta(hours=settings.EMERGENCY_REVIEW_HOURS)


def involved(deployment) -> set[int]:
    """Who took part in the change: requester, approvers, whoever overrode a
    policy, asked for or approved the break-glass."""
    people = {deployment.requested_by_id}
    people |= set(deployment.approvals.values_list("user_id", flat=True))
    check = deployment.policy()
    if check is not None:
        people.add(check.overridden_by_id)
    overrides = [deployment.freeze_override] if deployment.freeze_override_id else []
    if glass := audit_break_glass(deployment):
        overrides += list(FreezeOverride.objects.filter(pk=glass))
    for override in overrides:
        people |= {override.requested_by_id, override.decided_by_id}
    return people - {None}


def audit_break_glass(deployment) -> int | None:
    """The break-glass override that lifted a hard policy block, from the
    deployment's `deployment.queued` event."""
    event = (
        AuditEvent.objects.filter(
            target_type="deployments.deployment", target_id=str(deployment.pk),
            action="deployment.queued",
        )
        .order_by("-seq")
        .first()
    )  # fmt: skip
    return (event.after or {}).get("policy_break_glass") if event else None


def check_reviewer(deployment, user) -> None:
    """Raise, saying why, unless `user` may review this emergency change now."""
    if not deployment.emergency:
        raise Conflict("This deployment was not an emergency change; it needs no review.")
    if deployment.reviewed_at is not None:
        raise Conflict(f"{deployment.reviewed_by.get_username()} already reviewed it.")
    if deployment.status not in REVIEWABLE:
        raise Conflict("Review an emergency change once it has run.")
    if user.pk in involved(deployment):
        raise Forbidden("You took part in this change; someone who did not must review it.")
    if not has_role(user, deployment.environment, Role.APPROVER, Role.ADMIN):
        raise Forbidden(
            f"Only approvers and admins of {deployment.environment} review emergency changes."
        )


def review(deployment, user, comment: str) -> None:
    comment = " ".join((comment or "").split())
    if not comment:
        raise PolicyError("Say what the review found; it is audited.", field="comment")
    if len(comment) > COMMENT_MAX:
        raise PolicyError(f"Keep the review under {COMMENT_MAX} characters.", field="comment")
    with transaction.atomic():
        deployment._lock()
        check_reviewer(deployment, user)
        now = timezone.now()
        type(deployment).objects.filter(pk=deployment.pk).update(
            reviewed_by=user, reviewed_at=now, review_comment=comment
        )
        deployment.reviewed_by, deployment.reviewed_at, deployment.review_comment = (
            user, now, comment,
        )  # fmt: skip
        deployment.tell_viewers()
        due = review_due_by(deployment)
        audit.record(
            "deployment.emergency_reviewed", deployment, actor=user,
            after={"comment": comment, "due_by": due.isoformat() if due else None,
                   "late": bool(due and now > due)},
        )  # fmt: skip
