"""Admin for the catalog. Policy changes (approvals, groups, promotion rules)
are audited with their values before and after; secrets only as set/changed."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from environments.choices import OverrideStatus
from environments.models import (
    Application,
    Environment,
    FreezeOverride,
    FreezeWindow,
    Service,
    Step,
)
from environments.steps import ConfigError, validate_alarm_sources, validate_step_config
from portal.core import audit
from portal.core.admin import AuditedAdmin, ReadOnlyAdmin


class ServiceInline(admin.TabularInline):
    model = Service
    extra = 0
    fields = ["slug", "name", "image_repositories"]


@admin.register(Application)
class ApplicationAdmin(AuditedAdmin):
    list_display = ["slug", "name"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [ServiceInline]


class StepForm(forms.ModelForm):
    """Checks a step's config with its runner, so a typo fails here and not mid-deployment."""

    class Meta:
        model = Step
        fields = ["order", "name", "kind", "config"]

    def clean(self) -> dict:
        cleaned = super().clean()
        kind, config = cleaned.get("kind"), cleaned.get("config")
        if kind and "config" not in self.errors:
            try:
                validate_step_config(kind, config if config is not None else {})
            except ConfigError as exc:
                # Stored as typed: the runner fills in defaults when it runs.
                self.add_error("config", f"{exc.key}: {str(exc).split(': ', 1)[-1]}")
        return cleaned


class StepInline(admin.TabularInline):
    model = Step
    form = StepForm
    extra = 0
    fields = ["order", "name", "kind", "config"]


class FreezeWindowInline(admin.StackedInline):
    model = FreezeWindow
    extra = 0


class EnvironmentAdminForm(forms.ModelForm):
    """The webhook URL and secret variables are write-only here: the page never
    shows them, an empty box keeps what is stored, a tick removes both."""

    webhook_url = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown. Leave empty to keep the current one.",
    )
    secret_variables = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"NAME": "value"}'}),
        help_text="A JSON object of names to values, stored encrypted and never shown. "
        "Leave empty to keep the current ones.",
    )
    clear_secrets = forms.BooleanField(
        required=False, label="Remove the webhook URL and all secret variables"
    )

    class Meta:
        model = Environment
        fields = "__all__"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.initial["webhook_url"] = ""
        self.initial["secret_variables"] = ""

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"].strip()
        if not url:
            return self.instance.webhook_url or ""
        if not url.startswith("https://"):
            raise forms.ValidationError("A webhook URL starts with https://.")
        return url

    def clean_secret_variables(self) -> dict:
        raw = self.cleaned_data["secret_variables"].strip()
        if not raw:
            return self.instance.secret_variables or {}
        try:
            values = json.loads(raw)
        except ValueError:
            raise forms.ValidationError("This is not valid JSON.") from None
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise forms.ValidationError('Give a JSON object of strings, e.g. {"TOKEN": "…"}.')
        return values

    def clean_alarm_sources(self) -> dict:
        """Checked like a bake step's sources, so the dashboard never polls a typo."""
        sources = self.cleaned_data.get("alarm_sources") or {}
        try:
            validate_alarm_sources(sources)
        except ConfigError as exc:
            raise forms.ValidationError(f"{exc.key}: {str(exc).split(': ', 1)[-1]}") from None
        return sources

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("clear_secrets"):
            cleaned["webhook_url"], cleaned["secret_variables"] = "", {}
        return cleaned


@admin.register(Environment)
class EnvironmentAdmin(AuditedAdmin):
    form = EnvironmentAdminForm
    list_display = ["__str__", "name", "order", "tier", "required_approvals",
                    "require_previous_success"]  # fmt: skip
    list_filter = ["application", "tier"]
    search_fields = ["slug", "name", "application__slug"]
    list_select_related = ["application"]
    inlines = [StepInline, FreezeWindowInline]
    fieldsets = [
        (None, {"fields": ["application", "slug", "name", "order", "tier"]}),
        (
            "Protection rules",
            {
                "fields": [
                    "required_approvals",
                    "approver_group",
                    "second_approver_group",
                    "approval_ttl_hours",
                    "require_previous_success",
                    "rollback_required_approvals",
                    "implementers_may_not_approve",
                    "approval_mfa_minutes",
                    "image_verification",
                    "cost_increase_limit_usd",
                    "cost_approval_group",
                ]  # fmt: skip
            },
        ),
        (
            "Where it runs",
            {
                "fields": [
                    "region",
                    "aws_role_arn",
                    "kube_context",
                    "variables",
                    "secret_variables",
                    "health_urls",
                    "monthly_budget_usd",
                ]  # fmt: skip
            },
        ),
        ("Alarms", {"fields": ["alarm_sources"]}),
        ("Notifications and secrets", {"fields": ["webhook_url", "clear_secrets"]}),
    ]


@admin.register(FreezeWindow)
class FreezeWindowAdmin(AuditedAdmin):
    list_display = ["environment", "kind", "reason", "starts_at", "ends_at"]
    list_filter = ["kind", "environment__application"]
    list_select_related = ["environment__application"]


@admin.register(FreezeOverride)
class FreezeOverrideAdmin(ReadOnlyAdmin):
    """Break-glass requests and decisions go through FreezeOverride.request/approve,
    which check the two-person rule; here they are only read, or revoked early."""

    list_display = ["environment", "requested_by", "status", "decided_by", "expires_at",
                    "created_at"]  # fmt: skip
    list_filter = ["status"]
    list_select_related = ["environment__application", "requested_by", "decided_by"]
    actions = ["revoke_overrides"]

    def has_change_permission(self, request, obj=None) -> bool:
        # Needed for the revoke action; every field stays read-only.
        return super(ReadOnlyAdmin, self).has_change_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in FreezeOverride._meta.fields]

    @admin.action(description="Revoke selected active overrides now")
    def revoke_overrides(self, request, queryset) -> None:
        revoked = 0
        with transaction.atomic():
            for override in queryset.select_related("environment"):
                # Conditional UPDATE: two admins revoking at once record it once.
                if FreezeOverride.objects.filter(
                    pk=override.pk, status=OverrideStatus.ACTIVE
                ).update(status=OverrideStatus.REVOKED, expires_at=timezone.now()):
                    revoked += 1
                    audit.record("freeze_override.revoked", override, actor=request.user,
                                 before={"status": OverrideStatus.ACTIVE},
                                 after={"status": OverrideStatus.REVOKED})  # fmt: skip
        self.message_user(request, f"Revoked {revoked} override(s).")
