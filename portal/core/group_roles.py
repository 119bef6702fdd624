"""Roles from IdP groups: which memberships a user's groups call for, and the
sync that grants and withdraws them.

Memberships stay what every permission check reads (portal/roles.py). Those a
group mapping grants carry the group's name (`Membership.via_group`); the sync
only ever touches such rows, so a role an admin granted by hand is never taken
away with a group. Every grant, change and loss is an audit event in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.contrib.auth.models import User
from django.db import transaction

from portal.core import audit
from portal.core.models import GroupRoleMapping, Membership, SsoIdentity
from portal.core.roles import forget_roles

# (environment id, role) -> the groups whose mappings grant it
Wanted = dict[tuple[int, str], set[str]]


def _environments():
    """The catalog's Environment model, by name: roles sit below the catalog
    they grant access to."""
    return apps.get_model("environments", "Environment")


def wanted_roles(groups: Iterable[str]) -> Wanted:
    """The roles that members of `groups` hold through mappings, per environment."""
    mappings = list(GroupRoleMapping.objects.filter(group__in=set(groups)))
    if not mappings:
        return {}
    environments = list(_environments().objects.values_list("pk", "application_id"))
    wanted: Wanted = {}
    for mapping in mappings:
        for environment_id, application_id in environments:
            if mapping.covers(environment_id, application_id):
                wanted.setdefault((environment_id, mapping.role), set()).add(mapping.group)
    return wanted


def _describe(membership: Membership, via: str) -> dict[str, str]:
    return {
        "user": membership.user.get_username(),
        "environment": str(membership.environment),
        "role": membership.role,
        "via": via,
    }


def sync_memberships(user: User, groups: Iterable[str]) -> list[str]:
    """Grant and withdraw `user`'s group-derived memberships to match `groups`.

    Returns one line per change (for messages and commands); each is audited
    as membership.granted / .revoked / .changed with `via` the group.
    """
    changes: list[str] = []
    with transaction.atomic():
        # One sync per user at a time: sign-in, a re-check and an admin's
        # change of a mapping may race, and the rows are (user, env, role)-unique.
        User.objects.select_for_update().filter(pk=user.pk).first()
        wanted = wanted_roles(groups)
        held = {
            (row.environment_id, row.role): row
            for row in Membership.objects.filter(user=user).select_related(
                "environment__application", "user"
            )
        }
        for key, row in held.items():
            if not row.via_group:
                continue  # granted by hand: not ours to change
            granting = wanted.get(key, set())
            if row.via_group in granting:
                continue
            if granting:
                # Another of the user's groups grants the same role: keep it, say why.
                before = _describe(row, row.via_group)
                row.via_group = min(granting)
                row.save(update_fields=["via_group"])
                audit.record("membership.changed", row, environment=row.environment,
                             before=before, after=_describe(row, row.via_group))  # fmt: skip
                changes.append(f"{row.role} in {row.environment}: now via {row.via_group}")
                continue
            before = _describe(row, row.via_group)
            target = (row._meta.label_lower, row.pk, str(row))
            environment = row.environment
            row.delete()
            audit.record("membership.revoked", target, environment=environment, before=before)
            changes.append(f"lost {row.role} in {environment} (via {before['via']})")
        missing = [key for key in wanted if key not in held]
        if missing:
            environments = (
                _environments()
                .objects.select_related("application")
                .in_bulk({environment_id for environment_id, _ in missing})
            )
            for environment_id, role in sorted(missing):
                via = min(wanted[(environment_id, role)])
                row = Membership.objects.create(
                    user=user, environment=environments[environment_id], role=role, via_group=via
                )
                audit.record("membership.granted", row, environment=row.environment,
                             after=_describe(row, via))  # fmt: skip
                changes.append(f"granted {role} in {row.environment} (via {via})")
    # Role checks cache per user object; this one must see the new rows.
    forget_roles(user)
    return changes


def resync_members_of(*groups: str) -> int:
    """Re-apply the mappings to every user last seen in one of `groups`, or
    holding a role through one, from the groups the IdP gave at their last
    check: a new or removed mapping takes effect now, not at each member's
    next re-check. Returns the number of users whose memberships changed."""
    named = set(groups)
    # JSON containment is not portable (SQLite): the groups are read in Python.
    user_ids = {
        user_id
        for user_id, seen in SsoIdentity.objects.filter(withdrawn_at__isnull=True).values_list(
            "user_id", "groups"
        )
        if named & set(seen or [])
    }
    user_ids |= set(
        Membership.objects.filter(via_group__in=named).values_list("user_id", flat=True)
    )
    changed = 0
    for user in User.objects.filter(pk__in=user_ids).select_related("sso_identity"):
        identity = getattr(user, "sso_identity", None)
        current = identity.groups if identity is not None and identity.withdrawn_at is None else []
        if sync_memberships(user, current):
            changed += 1
    return changed


def add_mapping(group: str, role: str, *, application=None, environment=None):
    """The mapping, created (and audited) unless it exists; returns (mapping, created).

    Memberships follow at each member's next sign-in or re-check, or at once
    through map_group."""
    mapping, created = GroupRoleMapping.objects.get_or_create(
        group=group, role=role, application=application, environment=environment
    )
    if created:
        audit.record("group_role_mapping.created", mapping, environment=environment,
                     application=application, after=mapping.describe())  # fmt: skip
    return mapping, created


def remove_mapping(mapping: GroupRoleMapping) -> None:
    """Delete the mapping (audited); memberships it granted go at the next sync."""
    described = mapping.describe()
    target = (mapping._meta.label_lower, mapping.pk, str(mapping))
    environment, application = mapping.environment_id, mapping.application_id
    mapping.delete()
    audit.record("group_role_mapping.deleted", target, environment=environment,
                 application=application, before=described)  # fmt: skip


def map_group(
    group: str,
    role: str,
    *,
    application=None,
    environment=None,
) -> tuple[GroupRoleMapping, bool]:
    """Map `group` to `role` (audited) and grant it to the group's known members now."""
    with transaction.atomic():
        mapping, created = add_mapping(
            group, role, application=application, environment=environment
        )
        if created:
            resync_members_of(group)
    return mapping, created


def unmap_group(mapping: GroupRoleMapping) -> None:
    """Remove a mapping (audited) and withdraw what it alone granted."""
    with transaction.atomic():
        remove_mapping(mapping)
        resync_members_of(mapping.group)
