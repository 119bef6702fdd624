"""API endpoints of the guardrails: judging a plan before anything is
requested (for CI, like cost estimates), an admin's override of a
deployment's soft-mandatory violations (docs/POLICIES.md), and the review of
an emergency change."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from deployments.api import (
    MAX_PLAN_BYTES,
    PRICING_ROLES,
    PlanParser,
    _errors,
    _field_error,
    plan_too_large,
    visible_deployments,
)
from deployments.models import Deployment
from deployments.models.policy import evaluate_plans
from deployments.serializers import DeploymentSerializer
from environments import plan_policy, pricing
from portal.core.api_params import (
    BIGINT_MAX,
    reject_nul_bytes,
    whole_number,
)
from portal.core.roles import Forbidden, has_role, visible_environments

# Text with something in it and no NUL (which PostgreSQL cannot store).
TEXT = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
# What `release` reads as when CI asks before registering one.
UNREGISTERED = "(not registered)"

_ACTIONS = sorted(plan_policy.ACTIONS)
_CHANGE_COMMON = {
    "before": {"type": "object", "nullable": True},
    "after_unknown": {"oneOf": [{"type": "object"}, {"type": "boolean"}]},
    "replace_paths": {
        "type": "array",
        "items": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
    },
}
# What plan_policy.check_plan accepts, as a schema: a change that creates or
# updates must say what comes after it.
POLICY_PLAN_SCHEMA = {
    "type": "object",
    "description": "A plan as `terraform show -json <planfile>` prints it (Terraform 0.12-1.x).",
    "required": ["format_version", "resource_changes"],
    "properties": {
        "format_version": {"type": "string", "pattern": r"^[01]\.[0-9]+$", "example": "1.2"},
        "errored": {"type": "boolean", "enum": [False]},
        "resource_changes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["address", "type", "change"],
                "properties": {
                    "address": {"type": "string", "minLength": 1, "example": "aws_s3_bucket.logs"},
                    "type": {"type": "string", "minLength": 1, "example": "aws_s3_bucket"},
                    "mode": {"type": "string", "enum": ["managed", "data"]},
                    "name": {"type": "string"},
                    "module_address": {"type": "string"},
                    "index": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
                    "change": {
                        "anyOf": [
                            {
                                "type": "object",
                                "required": ["actions"],
                                "properties": {
                                    "actions": {"type": "array", "minItems": 1, "items": {
                                        "type": "string",
                                        "enum": ["delete", "forget", "no-op", "read"]}},
                                    "after": {"type": "object", "nullable": True},
                                    **_CHANGE_COMMON,
                                },
                            },
                            {
                                "type": "object",
                                "required": ["actions", "after"],
                                "properties": {
                                    "actions": {"type": "array", "minItems": 1,
                                                "items": {"type": "string", "enum": _ACTIONS}},
                                    "after": {"type": "object"},
                                    **_CHANGE_COMMON,
                                },
                            },
                        ]
                    },
                },
            },
        },
    },
}  # fmt: skip


class ViolationSerializer(serializers.Serializer):
    policy = serializers.CharField()
    level = serializers.ChoiceField(choices=[level.value for level in plan_policy.Level])
    message = serializers.CharField()
    address = serializers.CharField(allow_null=True, help_text="The plan's resource address.")


class ExtraApprovalSerializer(serializers.Serializer):
    policy = serializers.CharField()
    group = serializers.CharField()
    count = serializers.IntegerField()
    message = serializers.CharField()


class PolicyEvaluationSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=[outcome.value for outcome in plan_policy.Outcome])
    violations = ViolationSerializer(many=True)
    extra_approvals = ExtraApprovalSerializer(many=True)
    policy_sha256 = serializers.CharField()


class PolicyEvaluationCreate(generics.GenericAPIView):
    """Judge a `terraform show -json` plan by the policies, in an environment's
    context, before a deployment is requested. Stores nothing."""

    serializer_class = PolicyEvaluationSerializer
    parser_classes = [PlanParser]
    pagination_class = None

    @extend_schema(
        summary="Check a Terraform plan (terraform show -json) against the policies",
        parameters=[
            OpenApiParameter("environment", {"type": "integer", "minimum": 1,
                                             "maximum": BIGINT_MAX}, required=True,
                             description="Environment id: its tier, cost limit and freeze apply."),
            OpenApiParameter("release", str, description="The version the plan is for, if any."),
        ],
        request={"application/json": POLICY_PLAN_SCHEMA},
        responses={
            200: PolicyEvaluationSerializer, **_errors(400, 403, 404),
            413: OpenApiResponse(description=f"The plan is over {MAX_PLAN_BYTES} bytes."),
        },
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        reject_nul_bytes(request.query_params, ["environment", "release"])
        if not request.query_params.get("environment", "").strip():
            raise _field_error("environment", "Give ?environment=<id>.")
        environment_id = whole_number(request.query_params, "environment", minimum=1)
        environment = get_object_or_404(
            visible_environments(request.user).select_related("application", "cost_approval_group"),
            pk=environment_id,
        )
        if not any(has_role(request.user, environment, role) for role in PRICING_ROLES):
            raise Forbidden(
                f"Checking plans for {environment} is for its deployers, approvers and admins."
            )
        if too_large := plan_too_large(request):
            return too_large
        plan = request.data
        try:
            plan_policy.check_plan(plan)
        except plan_policy.PlanDocumentError as exc:
            raise _field_error("plan", str(exc)) from None
        context = _context(environment, plan, request)
        try:
            verdict = evaluate_plans([("plan", plan)], context)
        except plan_policy.PlanDocumentError as exc:
            raise _field_error("plan", str(exc)) from None
        for violation in verdict["violations"]:
            violation.pop("step")
        return Response(verdict)


def _context(environment, plan: dict, request: Request) -> dict:
    try:
        estimate = pricing.estimate_plan(plan, environment.region).as_json()
    except (pricing.UnknownRegion, pricing.PlanError):
        estimate = None  # the cost policies see no estimate, as in a real plan job
    override = environment.active_override()
    release = request.query_params.get("release", "").strip() or UNREGISTERED
    return {
        "application": environment.application.slug,
        "environment": environment.slug,
        "tier": environment.tier,
        "release": release[:64],
        "requester": request.user.get_username(),
        "cost": ({key: estimate[key] for key in plan_policy.COST_KEYS} if estimate else None),
        "cost_increase_limit_usd": environment.cost_increase_limit_usd,
        "cost_approval_group": (
            environment.cost_approval_group.name if environment.cost_approval_group_id else None
        ),
        "now": timezone.now(),
        "freeze_override_active": override is not None,
    }


class PolicyOverrideSerializer(serializers.Serializer):
    reason = serializers.RegexField(
        r"\S",
        max_length=2000,
        help_text="Why the violations may pass; audited, shown to auditors.",
    )


class DeploymentPolicyOverride(generics.GenericAPIView):
    """An environment admin (not the requester) lets a plan's soft-mandatory
    violations pass, with a reason."""

    serializer_class = PolicyOverrideSerializer

    def get_queryset(self):
        return visible_deployments(self.request.user)

    @extend_schema(
        summary="Override a plan's soft-mandatory policy violations (environment admin)",
        request=PolicyOverrideSerializer,
        responses={200: DeploymentSerializer, **_errors(400, 403, 404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        deployment: Deployment = get_object_or_404(self.get_queryset(), pk=pk)
        given = PolicyOverrideSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        deployment.override_policy(request.user, given.validated_data["reason"])
        return Response(DeploymentSerializer(self.get_queryset().get(pk=pk)).data)


class EmergencyReviewSerializer(serializers.Serializer):
    comment = serializers.RegexField(
        TEXT, max_length=2000, help_text="What the review found; audited."
    )


class DeploymentEmergencyReview(generics.GenericAPIView):
    """The post-implementation review of an emergency change, by an approver or
    admin of the environment who took no part in it."""

    serializer_class = EmergencyReviewSerializer

    def get_queryset(self):
        return visible_deployments(self.request.user)

    @extend_schema(
        summary="Review an emergency change after it ran (approver or admin not involved)",
        request=EmergencyReviewSerializer,
        responses={200: DeploymentSerializer, **_errors(400, 403, 404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        deployment: Deployment = get_object_or_404(self.get_queryset(), pk=pk)
        given = EmergencyReviewSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        deployment.review_emergency(request.user, given.validated_data["comment"])
        return Response(DeploymentSerializer(self.get_queryset().get(pk=pk)).data)
