"""Admin for releases and deployments: almost everything here is read-only,
because state changes must go through the model methods that check the rules
(four eyes, freezes, promotion order) and write the audit trail."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction

from deployments.models import (
    Approval,
    Artifact,
    Deployment,
    Notification,
    Release,
    StepRun,
)
from portal.core.admin import AuditedAdmin, ReadOnlyAdmin, ReadOnlyInline
from portal.core.roles import PolicyError


class ArtifactInline(ReadOnlyInline):
    model = Artifact
    fields = ["service", "image_ref"]
    readonly_fields = ["service", "image_ref"]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    """Releases are immutable; register them with Release.register (page or API)."""

    list_display = ["__str__", "commit", "created_by", "created_at"]
    list_filter = ["application"]
    search_fields = ["version", "commit", "application__slug"]
    list_select_related = ["application", "created_by"]
    inlines = [ArtifactInline]


class ApprovalInline(ReadOnlyInline):
    model = Approval
    fields = ["user", "decision", "comment", "digest", "created_at"]
    readonly_fields = fields


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    """Status moves only through Deployment's methods; the admin can cancel an
    open request through the same method, which checks the caller's role."""

    list_display = ["__str__", "kind", "status", "requested_by", "created_at", "finished_at"]
    list_filter = ["status", "kind", "environment__application", "environment"]
    search_fields = ["=id", "release__version", "requested_by__username"]
    list_select_related = ["release__application", "environment__application", "requested_by"]
    inlines = [ApprovalInline]
    actions = ["cancel_requests"]

    def has_change_permission(self, request, obj=None) -> bool:
        # Needed for the cancel action; every field stays read-only.
        return super(ReadOnlyAdmin, self).has_change_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Deployment._meta.fields]

    @admin.action(description="Cancel selected open requests")
    def cancel_requests(self, request, queryset) -> None:
        for deployment in queryset:
            try:
                with transaction.atomic():
                    deployment.cancel(request.user, "cancelled from the admin")
            except PolicyError as exc:
                self.message_user(request, f"#{deployment.pk}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"#{deployment.pk} cancelled.")


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "user", "decision", "created_at"]
    list_filter = ["decision"]
    list_select_related = ["deployment__release__application", "deployment__environment",
                           "user"]  # fmt: skip


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "event", "channel", "status", "attempts", "sent_at"]
    list_filter = ["status", "channel", "event"]


@admin.register(StepRun)
class StepRunAdmin(AuditedAdmin):
    list_display = ["__str__", "phase", "kind", "status", "started_at", "finished_at"]
    list_filter = ["status", "kind", "phase"]
    raw_id_fields = ["deployment"]


# LogLine has no admin: Django's admin cannot list a model keyed by two
# columns, and a deployment's lines are read on its page, through the API
# (/api/v1/deployments/{id}/logs/) and in its evidence pack.
