"""JSON shapes of the catalog for the API (/api/v1/)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from environments.models import Application, Environment, Service
from portal.core.api_params import StrictCharField, StrictIntegerField


class ServiceSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Service
        fields = ["slug", "name"]


class EnvironmentSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Environment
        fields = ["id", "slug", "name", "order", "tier"]


class ApplicationSerializer(serializers.ModelSerializer):
    """An application with its services and the environments the user may see.

    `environments` reads the `visible_environments` attribute that the view
    prefetches, so the list costs the same few queries however long it is.
    """

    services = ServiceSummarySerializer(many=True, read_only=True)
    environments = EnvironmentSummarySerializer(
        many=True, read_only=True, source="visible_environments"
    )

    class Meta:
        model = Application
        fields = ["slug", "name", "services", "environments"]


class PolicySerializer(serializers.Serializer):
    """Schema of Environment.policy_snapshot()."""

    required_approvals = serializers.IntegerField()
    approver_group = serializers.CharField(allow_null=True)
    second_approver_group = serializers.CharField(allow_null=True)
    approval_ttl_hours = serializers.IntegerField()
    require_previous_success = serializers.BooleanField()
    rollback_required_approvals = serializers.IntegerField()
    implementers_may_not_approve = serializers.BooleanField()
    approval_mfa_minutes = serializers.IntegerField(allow_null=True)
    image_verification = serializers.ChoiceField(choices=["off", "warn", "block"])
    cost_increase_limit_usd = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True
    )
    cost_approval_group = serializers.CharField(allow_null=True)


class CurrentReleaseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.CharField()


class EnvironmentDetailSerializer(serializers.ModelSerializer):
    """One environment: its rules, whether it is frozen now, and what runs there.

    The view sets `freeze` ((window, until) or None), `override` and
    `current_release` on the instance before serialising.
    """

    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    policy = serializers.SerializerMethodField()
    frozen_until = serializers.SerializerMethodField()
    freeze_reason = serializers.SerializerMethodField()
    override_until = serializers.SerializerMethodField()
    current_release = CurrentReleaseSerializer(allow_null=True, read_only=True)

    class Meta:
        model = Environment
        fields = [
            "id", "slug", "name", "application", "order", "tier", "policy",
            "frozen_until", "freeze_reason", "override_until", "current_release",
        ]  # fmt: skip

    @extend_schema_field(PolicySerializer)
    def get_policy(self, env: Environment) -> dict:
        return env.policy_snapshot()

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_frozen_until(self, env: Environment) -> str | None:
        return serializers.DateTimeField().to_representation(env.freeze[1]) if env.freeze else None

    def get_freeze_reason(self, env: Environment) -> str:
        return env.freeze[0].reason if env.freeze else ""

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_override_until(self, env: Environment) -> str | None:
        """When the break-glass override in force ends (deployments are allowed until then)."""
        if env.override is None:
            return None
        return serializers.DateTimeField().to_representation(env.override.expires_at)


class RollbackSerializer(serializers.Serializer):
    reason = StrictCharField(
        allow_blank=True, max_length=2000, help_text="Why the environment is rolled back."
    )
    release = StrictIntegerField(
        required=False, min_value=1, max_value=2**63 - 1,
        help_text="The release to bring back (one that succeeded here). Default: the newest "
        "release that succeeded here and was not rolled back from since, other than what "
        "runs now.",
    )  # fmt: skip
