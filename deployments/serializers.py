"""JSON shapes of releases and deployments for the API (/api/v1/).

Input serializers only check types; the rules (image pinned by digest, roles,
freezes, four eyes) stay in the model methods they call, so the API and the
pages can never disagree.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from deployments.choices import Decision, Kind, Status, Stream
from deployments.models import Approval, Deployment, Release
from portal.core.api_params import StrictCharField, StrictIntegerField, StrictSlugField
from portal.core.roles import visible_environments

# Ids beyond PostgreSQL's bigint would reach the database as an error, not a 404.
MAX_ID = 2**63 - 1


EXAMPLE_REGISTRY = "123456789012.dkr.ecr.ca-central-1.amazonaws.com"


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "One image pinned by digest for every service of the application.",
        "example": {
            service: f"{EXAMPLE_REGISTRY}/{service}@sha256:" + "a" * 64
            for service in ("fraud-api", "fraud-ml", "fraud-worker")
        },
    }
)
class ArtifactMapField(serializers.JSONField):
    """service slug → image pinned by digest. Validated by Release.register, which
    names the offending service (`artifacts.<slug>`)."""


class RolledBackSerializer(serializers.Serializer):
    environment = serializers.SlugField(help_text="Environment slug.")
    environment_id = serializers.IntegerField()
    rolled_back_at = serializers.DateTimeField()
    rolled_back_by_deployment = serializers.IntegerField(help_text="The rollback's id.")


class ReleaseSerializer(serializers.ModelSerializer):
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    artifacts = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    rolled_back = serializers.SerializerMethodField(
        help_text="Environments where the release was rolled away from and not deployed "
        "forward since (no default rollback target, no promotion from there)."
    )

    class Meta:
        model = Release
        fields = [
            "id", "application", "version", "artifacts", "notes", "commit", "commit_author",
            "created_by", "created_at", "rolled_back",
        ]  # fmt: skip

    @extend_schema_field(ArtifactMapField)
    def get_artifacts(self, release: Release) -> dict[str, str]:
        return release.artifact_map()

    @extend_schema_field(RolledBackSerializer(many=True))
    def get_rolled_back(self, release: Release) -> list[dict]:
        request = self.context.get("request")
        runs = release.deployments.filter(kind=Kind.DEPLOY, status=Status.SUCCEEDED)
        if request is not None:
            runs = runs.filter(environment__in=visible_environments(request.user))
        newest = {}
        for run in runs.select_related("environment").latest_first():
            newest.setdefault(run.environment_id, run)
        return [
            {"environment": run.environment.slug, "environment_id": run.environment_id,
             "rolled_back_at": run.rolled_back_at,
             "rolled_back_by_deployment": run.rolled_back_by_id}
            for run in newest.values() if run.rolled_back_at is not None
        ]  # fmt: skip


class ReleaseCreateSerializer(serializers.Serializer):
    application = StrictSlugField(help_text="Application slug, e.g. fraud-detector.")
    version = StrictCharField(max_length=64, allow_blank=True)
    artifacts = ArtifactMapField()
    notes = StrictCharField(required=False, allow_blank=True, default="")
    commit = StrictCharField(required=False, allow_blank=True, default="", max_length=40)
    commit_author = StrictCharField(
        required=False, allow_blank=True, default="", max_length=254,
        help_text="Who wrote the commit: 'Name <email>', an e-mail or a Gantry user name.",
    )  # fmt: skip


class ReleaseRefSerializer(serializers.ModelSerializer):
    artifacts = serializers.SerializerMethodField()

    class Meta:
        model = Release
        fields = ["id", "version", "artifacts"]

    @extend_schema_field(ArtifactMapField)
    def get_artifacts(self, release: Release) -> dict[str, str]:
        return release.artifact_map()


class EnvironmentRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.SlugField()
    application = serializers.SlugField(source="application.slug")


class ApproverAuthenticationSerializer(serializers.Serializer):
    """How and when the approver last proved who they were before deciding."""

    method = serializers.ChoiceField(
        choices=["", "api_token", "password", "sso", "totp", "recovery_code", "sso_mfa"],
        help_text="'' when not recorded (approvals older than this field).",
    )
    label = serializers.CharField()
    at = serializers.DateTimeField(allow_null=True)
    strong = serializers.BooleanField(help_text="A second factor: totp, recovery_code, sso_mfa.")
    amr = serializers.ListField(child=serializers.CharField(), help_text="From the IdP.")
    acr = serializers.CharField(help_text="From the IdP.")


class ApprovalSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    at = serializers.DateTimeField(source="created_at")
    valid = serializers.SerializerMethodField()
    authentication = serializers.SerializerMethodField()
    rules = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Approval
        fields = ["user", "decision", "comment", "at", "digest", "valid", "authentication",
                  "rules"]  # fmt: skip

    @extend_schema_field(ApproverAuthenticationSerializer)
    def get_authentication(self, approval: Approval) -> dict:
        return approval.authentication_summary()

    def get_valid(self, approval: Approval) -> bool:
        """Counts towards the policy: an approval given for exactly what ships now."""
        current = self.context["approval_digests"][approval.deployment_id]
        return approval.decision == Decision.APPROVE and approval.digest == current


class PolicyOverrideOutSerializer(serializers.Serializer):
    by = serializers.CharField()
    reason = serializers.CharField()
    at = serializers.DateTimeField()


class EmergencyReviewOutSerializer(serializers.Serializer):
    due_by = serializers.DateTimeField(allow_null=True, help_text="Null until it has run.")
    by = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField(allow_null=True)
    comment = serializers.CharField(allow_blank=True)


class PolicyCheckSerializer(serializers.Serializer):
    """Schema of PolicyCheck.as_dict()."""

    outcome = serializers.ChoiceField(choices=["pass", "warn", "override_required", "blocked"])
    violations = serializers.ListField(child=serializers.DictField())
    extra_approvals = serializers.ListField(child=serializers.DictField())
    policy_sha256 = serializers.CharField()
    evaluated_at = serializers.DateTimeField()
    override = PolicyOverrideOutSerializer(allow_null=True)


class DeploymentSerializer(serializers.ModelSerializer):
    release = ReleaseRefSerializer(read_only=True)
    environment = EnvironmentRefSerializer(read_only=True)
    requested_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    approval_digest = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    rollback_of = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="A rollback: the run it undid."
    )
    rolled_back_by_deployment = serializers.PrimaryKeyRelatedField(
        source="rolled_back_by", read_only=True, allow_null=True,
        help_text="The rollback that replaced this deployment's release here (then "
        "`rolled_back_at` says when): no default rollback target since.",
    )  # fmt: skip
    promoted_from = serializers.PrimaryKeyRelatedField(
        read_only=True,
        allow_null=True,
        help_text="The previous environment's run that satisfied the promotion rule.",
    )
    policy = serializers.SerializerMethodField(
        help_text="What the policies (policies/) said about the plan: `{outcome (pass, warn, "
        "override_required, blocked), violations [{policy, level, message, address, step}], "
        "extra_approvals [{policy, group, count, message}], policy_sha256, evaluated_at, "
        "override {by, reason, at} or null}`; null when no plan was checked."
    )
    review = serializers.SerializerMethodField(
        help_text="An emergency change's post-implementation review: `{due_by, by, at, "
        "comment}` (by/at null until reviewed); null for other deployments."
    )
    approvals_needed = serializers.SerializerMethodField(
        help_text="required_approvals plus the approvals the policies asked for."
    )
    image_checks = serializers.JSONField(
        read_only=True,
        help_text="What each image's registry said when the deployment was requested: "
        "`[{service, image, found (true/false/null), reason}]`.",
    )

    class Meta:
        model = Deployment
        fields = [
            "id", "status", "kind", "release", "environment", "requested_by", "reason",
            "required_approvals", "approval_digest", "approvals", "error",
            "created_at", "queued_at", "started_at", "finished_at", "rollback_of",
            "rolled_back_at", "rolled_back_by_deployment", "promoted_from", "image_checks",
            "policy", "approvals_needed", "not_before", "not_after", "emergency", "review",
        ]  # fmt: skip

    def _digest(self, deployment: Deployment) -> str:
        # Computed once per deployment and shared with every approval's `valid`.
        digests = self.context.setdefault("approval_digests", {})
        if deployment.pk not in digests:
            digests[deployment.pk] = deployment.approval_digest()
        return digests[deployment.pk]

    @extend_schema_field(PolicyCheckSerializer(allow_null=True))
    def get_policy(self, deployment: Deployment) -> dict | None:
        check = deployment.policy()
        return check.as_dict() if check else None

    @extend_schema_field(EmergencyReviewOutSerializer(allow_null=True))
    def get_review(self, deployment: Deployment) -> dict | None:
        if not deployment.emergency:
            return None
        due = deployment.review_due_by
        return {
            "due_by": due.isoformat() if due else None,
            "by": deployment.reviewed_by.get_username() if deployment.reviewed_by_id else None,
            "at": deployment.reviewed_at.isoformat() if deployment.reviewed_at else None,
            "comment": deployment.review_comment,
        }

    def get_approvals_needed(self, deployment: Deployment) -> int:
        return deployment.approvals_needed()

    def get_approval_digest(self, deployment: Deployment) -> str:
        return self._digest(deployment)

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, deployment: Deployment) -> list[dict]:
        self._digest(deployment)
        return ApprovalSerializer(deployment.approvals.all(), many=True, context=self.context).data


class DeploymentCreateSerializer(serializers.Serializer):
    release = StrictIntegerField(min_value=1, max_value=MAX_ID, help_text="Release id.")
    environment = StrictIntegerField(min_value=1, max_value=MAX_ID, help_text="Environment id.")
    reason = StrictCharField(allow_blank=True, help_text="Why this deployment is needed.")
    not_before = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Once approved, wait and start no sooner than this (ISO 8601 with offset).",
    )
    not_after = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Expire if not started by then."
    )
    # No `kind`: a rollback through the API would need only the rollback quorum
    # for any release, so the API requests deployments only.


class DecisionSerializer(serializers.Serializer):
    comment = StrictCharField(required=False, allow_blank=True, default="")
    digest = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=64,
        help_text="Approve only: the approval_digest you reviewed; a 409 if it changed since.",
    )


class LogLineSerializer(serializers.Serializer):
    """One stored line of a deployment's output (as the WebSocket sends it)."""

    seq = serializers.IntegerField(help_text="Numbered from 1; ask for lines after the last one.")
    step = serializers.CharField(help_text="The step's name; empty before the first step.")
    stream = serializers.ChoiceField(choices=Stream.choices)
    text = serializers.CharField(help_text="Raw text: escape it before showing it as HTML.")
    at = serializers.DateTimeField()


class DeploymentLogsSerializer(serializers.Serializer):
    lines = LogLineSerializer(many=True)
    status = serializers.ChoiceField(choices=Status.choices)
