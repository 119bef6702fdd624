"""The approvals inbox: what is waiting for this user's decision, oldest
first — deployments they may approve now and break-glass requests they may
decide. The same rules as the decisions themselves (Deployment.check_approver,
FreezeOverride), so the inbox never offers what would then be refused."""

from __future__ import annotations

from django.db.models import QuerySet

from deployments.choices import Status
from deployments.models import Approval, Deployment, load_artifacts
from environments.choices import OverrideStatus
from environments.models import FreezeOverride
from portal.core.choices import Role
from portal.core.prepared import prepared
from portal.core.roles import Forbidden, PolicyError, has_role, visible_environment_ids


def _deciders(user, environment_ids: list[int] | None, *roles: str) -> list[int]:
    """The environments (among `environment_ids`, the visible ones, when
    given) where the user holds one of `roles`."""
    if environment_ids is None:
        environment_ids = visible_environment_ids(user)
    return [pk for pk in environment_ids if has_role(user, pk, *roles)]


# The navigation badge runs these after every page, for every approver:
# prepared, with the environments (or deployments) as one list parameter
# (__any), they are not compiled again on each request.


def _asked_by_others(queryset: QuerySet, status: str, environment_ids, user_id) -> QuerySet:
    """Requests in `status` in these environments that someone else asked for, oldest first."""
    return (
        queryset.filter(status=status, environment_id__any=environment_ids)
        .exclude(requested_by_id=user_id)
        .order_by("created_at", "id")
    )


@prepared(environment_ids=list, user_id=int)
def _awaiting_in(environment_ids, user_id):
    deployments = Deployment.objects.select_related(
        "release__application",
        "environment__application",
        "requested_by",
        "environment__approver_group",
        "policy_check",
    )
    return _asked_by_others(deployments, Status.AWAITING_APPROVAL, environment_ids, user_id)


@prepared(deployment_ids=list, user_id=int)
def _decided_by(deployment_ids, user_id):
    """(deployment id, approval digest) of the user's approvals of these deployments."""
    return Approval.objects.filter(deployment_id__any=deployment_ids, user_id=user_id).values_list(
        "deployment_id", "digest"
    )


@prepared(environment_ids=list, user_id=int)
def _overrides_in(environment_ids, user_id):
    overrides = FreezeOverride.objects.select_related("environment__application", "requested_by")
    return _asked_by_others(overrides, OverrideStatus.PENDING, environment_ids, user_id)


def deployments_awaiting(user, visible: list[int] | None = None) -> list[Deployment]:
    """Deployments awaiting approval that `user` may approve now (`visible`:
    visible_environment_ids(user), when the caller has read it already)."""
    environment_ids = _deciders(user, visible, Role.APPROVER)
    if not environment_ids:
        return []  # most users, on every page: not even the query is built
    candidates = _awaiting_in.list(environment_ids=environment_ids, user_id=user.pk)
    if not candidates:
        return []
    # Read for all of them at once, not per deployment (the badge asks on
    # every page): the images each would ship, which its digest covers, and
    # what the user approved already.
    load_artifacts(*(deployment.release for deployment in candidates))
    decided = set(_decided_by.list(deployment_ids=[d.pk for d in candidates], user_id=user.pk))
    waiting = []
    for deployment in candidates:
        try:
            deployment.check_approver(user)
            if check := deployment.policy():
                check.refuse_if_blocked(deployment.environment)
        except (Forbidden, PolicyError):
            continue
        digest = deployment.approval_digest()
        if (deployment.pk, digest) in decided:
            continue  # decided already, on what would ship now
        waiting.append(deployment)
    return waiting


def awaiting_ids(user) -> QuerySet:
    """The same deployments as a queryset (for the API's `?awaiting=me`)."""
    return Deployment.objects.filter(pk__in=[d.pk for d in deployments_awaiting(user)])


def overrides_awaiting(user, visible: list[int] | None = None) -> list[FreezeOverride]:
    """Break-glass requests `user` may approve or reject (a second person)."""
    environment_ids = _deciders(user, visible, Role.APPROVER, Role.ADMIN)
    if not environment_ids:
        return []
    return _overrides_in.list(environment_ids=environment_ids, user_id=user.pk)


def count(user) -> int:
    # The navigation badge, after every page: the visible environments are read once.
    visible = visible_environment_ids(user)
    return len(deployments_awaiting(user, visible)) + len(overrides_awaiting(user, visible))
