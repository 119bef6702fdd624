"""The Django admin, audited: every change made through it lands in the audit
trail in the same transaction, with the fields before and after.

`AuditedAdmin` is the one mixin every ModelAdmin of the project uses. Secrets
(password hashes, webhook URLs, secret variables) are never written to the
trail: only whether they were set or changed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group, User
from django.core.paginator import Paginator
from django.db import connection, models, transaction
from django.forms.models import model_to_dict
from django.utils.functional import cached_property

from portal.core import audit, group_roles, tokens, totp
from portal.core.backends import LOCAL_LOGIN_OFF
from portal.core.models import (
    ApiToken,
    AuditEvent,
    GroupRoleMapping,
    Membership,
    SsoIdentity,
)

# Fields whose values must never reach the trail, whatever model they are on.
SECRET_FIELDS = frozenset(
    {"password", "webhook_url", "secret_variables", "access_token", "refresh_token"}
)


def _plain(value: Any) -> Any:
    """A JSON-friendly, human-readable form of a model_to_dict value."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, list | tuple | set | models.QuerySet):
        return sorted(_plain(item) for item in value)
    return value


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The editable fields of obj as stored now; foreign keys by name, m2m as sorted names."""
    values = model_to_dict(obj)
    values.pop(obj._meta.pk.name, None)  # the event's target already names the row
    for field in obj._meta.get_fields():
        # model_to_dict gives foreign keys as bare ids; the trail should read
        # "alice is approver in fraud-detector/production", not "4 is approver in 7".
        if field.many_to_one and field.name in values and values[field.name] is not None:
            try:
                values[field.name] = str(getattr(obj, field.name))
            except field.related_model.DoesNotExist:
                pass
    return {name: _plain(value) for name, value in values.items()}


def _mask(before: Any, after: Any, created: bool) -> tuple[str, str]:
    """What the trail says about a secret instead of its value."""
    was = "set" if before else "unset"
    if not after:
        return was, "unset"
    return was, "set" if created or not before else "changed"


def diff(before: dict | None, after: dict | None) -> tuple[dict | None, dict | None]:
    """Only the fields that changed (all of them on create/delete), secrets masked."""
    before, after = before or {}, after or {}
    created, deleted = not before, not after
    names = sorted(set(before) | set(after))
    changed = [n for n in names if created or deleted or before.get(n) != after.get(n)]
    old, new = {}, {}
    for name in changed:
        if name in SECRET_FIELDS:
            old[name], new[name] = _mask(before.get(name), after.get(name), created)
        else:
            old[name], new[name] = before.get(name), after.get(name)
    return (None if created else old), (None if deleted else new)


def _scope(obj: models.Model) -> dict[str, Any]:
    """The environment and application ids an object belongs to, so its events are
    filterable and visible to that environment's members. Ids, not objects: a
    deleted object has lost its pk by the time its event is written."""
    label = obj._meta.label_lower  # by name: this module sits below the catalog
    if label == "environments.environment":
        return {"environment": obj.pk, "application": obj.application_id}
    if label == "environments.application":
        return {"application": obj.pk}
    environment = None
    if getattr(obj, "environment_id", None):
        environment = obj.environment
    elif getattr(obj, "deployment_id", None):
        environment = obj.deployment.environment
    if environment is not None:
        return {"environment": environment.pk, "application": environment.application_id}
    if getattr(obj, "release_id", None):
        return {"application": obj.release.application_id}
    if getattr(obj, "application_id", None):
        return {"application": obj.application_id}
    return {}


def _target(obj: models.Model) -> tuple[str, str, str]:
    # A tuple rather than the object: after a delete the object has lost its pk.
    return obj._meta.label_lower, str(obj.pk), str(obj)[:200]


def record_admin_change(request, obj: models.Model, verb: str, before, after) -> None:
    old, new = diff(before, after)
    if verb == "changed" and not new:
        return  # saved without changing anything: nothing to tell the auditor
    audit.record(f"admin.{obj._meta.model_name}.{verb}", _target(obj), before=old, after=new,
                 actor=request.user, **_scope(obj))  # fmt: skip


class AuditedAdmin(admin.ModelAdmin):
    """Records admin.<model>.created|changed|deleted for the object and its inlines.

    The admin already runs a change or delete view in one transaction; the
    events are written inside it, so a change and its event commit together.
    """

    def save_model(self, request, obj, form, change) -> None:
        before = None
        if change and obj.pk is not None:
            # The form has already written its values onto obj: read the stored row.
            stored = type(obj)._default_manager.filter(pk=obj.pk).first()
            before = snapshot(stored) if stored is not None else None
        request._gantry_audit_before = before
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        inline_before = [self._inline_rows(formset) for formset in formsets]
        super().save_related(request, form, formsets, change)
        obj = form.instance
        # After save_related, so that m2m (a user's groups) is part of "after".
        before = getattr(request, "_gantry_audit_before", None)
        record_admin_change(request, obj, "changed" if change else "created", before,
                            snapshot(obj))  # fmt: skip
        for formset, rows_before in zip(formsets, inline_before, strict=True):
            rows_after = self._inline_rows(formset)
            for pk in sorted(set(rows_before) | set(rows_after), key=str):
                old, new = rows_before.get(pk), rows_after.get(pk)
                if new is None:
                    record_admin_change(request, old[0], "deleted", old[1], None)
                elif old is None:
                    record_admin_change(request, new[0], "created", None, new[1])
                else:
                    record_admin_change(request, new[0], "changed", old[1], new[1])

    @staticmethod
    def _inline_rows(formset) -> dict[Any, tuple[models.Model, dict]]:
        """The inline objects stored now for the parent, read fresh from the database."""
        if formset.instance.pk is None:
            return {}
        rows = formset.model._default_manager.filter(**{formset.fk.name: formset.instance})
        return {row.pk: (row, snapshot(row)) for row in rows}

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            before, target, scope = snapshot(obj), _target(obj), _scope(obj)
            super().delete_model(request, obj)
            self._record_delete(request, obj, target, scope, before)

    def delete_queryset(self, request, queryset) -> None:
        # The bulk "delete selected" action is not atomic by itself.
        with transaction.atomic():
            doomed = [(obj, _target(obj), _scope(obj), snapshot(obj)) for obj in queryset]
            super().delete_queryset(request, queryset)
            for obj, target, scope, before in doomed:
                self._record_delete(request, obj, target, scope, before)

    @staticmethod
    def _record_delete(request, obj, target, scope, before) -> None:
        old, _ = diff(before, None)
        audit.record(f"admin.{obj._meta.model_name}.deleted", target, before=old,
                     actor=request.user, **scope)  # fmt: skip


class ReadOnlyAdmin(AuditedAdmin):
    """Rows written only by the domain's own methods: viewable, never edited here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class EstimatedCountPaginator(Paginator):
    """Avoids COUNT(*) over a table of millions on every unfiltered admin page;
    PostgreSQL's planner estimate is close enough for page links."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if connection.vendor == "postgresql" and query is not None and not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [self.object_list.model._meta.db_table],
                )
                estimate = cursor.fetchone()[0]
            if estimate and estimate > 10_000:
                return estimate
        return super().count


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    """Roles granted by hand; rows with a group (`via_group`) come and go with
    the user's IdP groups (portal/group_roles.py)."""

    list_display = ["user", "environment", "role", "via_group"]
    list_filter = ["role", "environment__application", "environment", "via_group"]
    search_fields = ["user__username", "environment__slug", "environment__application__slug"]
    list_select_related = ["user", "environment__application"]
    autocomplete_fields = ["user"]


@admin.register(GroupRoleMapping)
class GroupRoleMappingAdmin(AuditedAdmin):
    """IdP group → role, on all environments, one application or one
    environment (leave both empty for all). Saving or deleting re-syncs the
    group's known members at once, each grant and loss audited."""

    list_display = ["group", "role", "application", "environment", "created_at"]
    list_filter = ["role", "application"]
    search_fields = ["group"]
    list_select_related = ["application", "environment__application"]
    fields = ["group", "role", "application", "environment"]

    def save_model(self, request, obj, form, change) -> None:
        old_group = form.initial.get("group") if change else None
        super().save_model(request, obj, form, change)
        group_roles.resync_members_of(*{obj.group, old_group} - {None})

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            super().delete_model(request, obj)
            group_roles.resync_members_of(obj.group)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            groups = set(queryset.values_list("group", flat=True))
            super().delete_queryset(request, queryset)
            group_roles.resync_members_of(*groups)


@admin.register(SsoIdentity)
class SsoIdentityAdmin(ReadOnlyAdmin):
    """Who signed in through SSO, their groups at the last check and whether
    the IdP still vouches for them. The tokens are never shown."""

    list_display = ["user", "subject", "issuer", "checked_at", "withdrawn_at"]
    list_filter = ["withdrawn_at"]
    search_fields = ["user__username", "subject"]
    list_select_related = ["user"]
    fields = ["user", "issuer", "subject", "groups", "signed_in_at", "checked_at",
              "withdrawn_at", "withdrawn_reason"]  # fmt: skip
    readonly_fields = fields


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Tokens are issued by portal.core.tokens.issue (the key is shown once); here they can
    only be renamed, revoked or deleted."""

    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "hint"]
    list_select_related = ["user"]
    fields = ["user", "name", "hint", "key_hash", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "hint", "key_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_tokens"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset) -> None:
        with transaction.atomic():
            revoked = sum(tokens.revoke(token) for token in queryset)
        self.message_user(request, f"Revoked {revoked} token(s).")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The trail, readable in the admin; the database refuses changes anyway."""

    list_display = ["seq", "at", "actor_name", "action", "target_repr", "environment_id", "ip"]
    list_filter = ["action"]
    search_fields = ["=actor_name", "=action", "=request_id"]
    ordering = ["-seq"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def get_actions(self, request):
        return {}  # no "delete selected"


class GroupAdmin(AuditedAdmin, auth_admin.GroupAdmin):
    pass


class UserAdmin(AuditedAdmin, auth_admin.UserAdmin):
    actions = ["reset_two_factor"]

    @admin.action(description="Reset two-factor authentication (lost phone)")
    def reset_two_factor(self, request, queryset) -> None:
        """Remove the authenticator and recovery codes of the chosen users
        (audited as auth.mfa_reset, naming the admin); they set it up again."""
        done = [user.get_username() for user in queryset if totp.reset(user, by=request.user)]
        if done:
            self.message_user(request, f"Two-factor authentication reset for {', '.join(done)}.")
        else:
            self.message_user(request, "None of them had two-factor authentication set up.")

    def user_change_password(self, request, id, form_url=""):
        # Django's password view saves the form directly, bypassing save_model.
        request._gantry_password_change = True
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)

    def log_change(self, request, obj, message):
        if getattr(request, "_gantry_password_change", False):
            audit.record("admin.user.password_changed", _target(obj),
                         after={"password": "changed"}, actor=request.user)  # fmt: skip
        return super().log_change(request, obj, message)


class AdminSignInForm(AdminAuthenticationForm):
    """The admin's sign-in: with LOCAL_LOGIN=0 it says why a password fails."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not settings.LOCAL_LOGIN:
            self.error_messages = {**self.error_messages, "invalid_login": LOCAL_LOGIN_OFF}


admin.site.login_form = AdminSignInForm
admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.register(User, UserAdmin)
admin.site.register(Group, GroupAdmin)
