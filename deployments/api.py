"""API endpoints for releases, deployments and their approvals.

Every endpoint starts from what the user may see (portal.core.roles): an object
outside it is a 404, as if it did not exist. What the user may *do* is decided
by the model methods (Release.register, Deployment.request/approve/...), whose
PolicyError / Forbidden / Conflict / Unavailable become 400 / 403 / 409 / 503 in
portal.api_errors.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from deployments import evidence, inbox
from deployments.choices import Status
from deployments.logs import line_payload
from deployments.models import Deployment, LogLine, Release
from deployments.serializers import (
    DecisionSerializer,
    DeploymentCreateSerializer,
    DeploymentLogsSerializer,
    DeploymentSerializer,
    ReleaseCreateSerializer,
    ReleaseSerializer,
)
from environments import pricing
from environments.models import Environment
from portal.core import mfa
from portal.core.api_params import reject_nul_bytes, whole_number
from portal.core.choices import Role
from portal.core.mfa import Authentication
from portal.core.models import ApiToken
from portal.core.roles import (
    Forbidden,
    has_role_anywhere,
    visible_applications,
    visible_environments,
)

ERRORS = {
    400: OpenApiResponse(description="Bad input: the body names the field, e.g. {'version': [..]}"),
    403: OpenApiResponse(description="Visible to you, but your role does not allow this."),
    404: OpenApiResponse(description="Not found, or not visible to you."),
    409: OpenApiResponse(description="Conflicts with the current state (duplicate, decided)."),
    503: OpenApiResponse(
        description="The job queue (Redis) is not answering; nothing was written, send it again."
    ),
}


def _errors(*codes: int) -> dict:
    return {code: ERRORS[code] for code in codes}


def visible_releases(user) -> QuerySet[Release]:
    return (
        Release.objects.filter(application_id__in=visible_applications(user).values("pk"))
        .select_related("application", "created_by")
        .prefetch_related("artifacts__service")
    )


def visible_deployments(user) -> QuerySet[Deployment]:
    return (
        Deployment.objects.filter(environment_id__in=visible_environments(user).values("pk"))
        .select_related(
            "release__application",
            "environment__application",
            "requested_by",
            "policy_check__overridden_by",
            "reviewed_by",
        )
        .prefetch_related("release__artifacts__service", "approvals__user")
    )


def _field_error(field: str, message: str) -> serializers.ValidationError:
    return serializers.ValidationError({field: [message]})


class ReleaseListCreate(generics.ListCreateAPIView):
    serializer_class = ReleaseSerializer

    def get_queryset(self) -> QuerySet[Release]:
        releases = visible_releases(self.request.user)
        reject_nul_bytes(self.request.query_params, ["application"])
        slug = self.request.query_params.get("application", "").strip()
        if slug:
            releases = releases.filter(application__slug=slug)
        return releases

    @extend_schema(
        summary="Releases you may see, newest first",
        parameters=[OpenApiParameter("application", str, description="Application slug.")],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Register a release (one image pinned by digest per service)",
        description="An image may be given by tag (`repository:tag`): it is resolved to "
        "the digest its registry names now, and the release pins that digest; a tag the "
        "registry lacks is a 400 naming the service.",
        request=ReleaseCreateSerializer,
        responses={201: ReleaseSerializer, **_errors(400, 403, 409)},
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        given = ReleaseCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        # An application the user cannot see reads as unknown: its name is not leaked.
        application = (
            visible_applications(request.user).filter(slug=data["application"]).order_by().first()
        )
        if application is None:
            raise _field_error("application", f"No application {data['application']!r}.")
        artifacts, _ = Release.resolve_tags(application, data["artifacts"], request.user)
        release = Release.register(
            application,
            data["version"],
            artifacts,
            request.user,
            notes=data["notes"],
            commit=data["commit"],
            commit_author=data["commit_author"],
        )
        body = ReleaseSerializer(visible_releases(request.user).get(pk=release.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(summary="One release and its artifacts", responses={200: ReleaseSerializer})
class ReleaseDetail(generics.RetrieveAPIView):
    serializer_class = ReleaseSerializer

    def get_queryset(self) -> QuerySet[Release]:
        return visible_releases(self.request.user)


class DeploymentListCreate(generics.ListCreateAPIView):
    serializer_class = DeploymentSerializer

    def get_queryset(self) -> QuerySet[Deployment]:
        deployments = visible_deployments(self.request.user)
        params = self.request.query_params
        reject_nul_bytes(params, ["status", "environment", "release", "awaiting"])
        awaiting = params.get("awaiting", "").strip()
        if awaiting:
            if awaiting != "me":
                raise _field_error("awaiting", "Only awaiting=me is known.")
            mine = inbox.awaiting_ids(self.request.user).values("pk")
            deployments = deployments.filter(pk__in=mine).order_by("created_at", "id")
        wanted_status = params.get("status", "").strip()
        if wanted_status:
            if wanted_status not in Status.values:
                raise _field_error("status", f"Use one of: {', '.join(Status.values)}.")
            deployments = deployments.filter(status=wanted_status)
        for name in ("environment", "release"):
            wanted = whole_number(params, name)
            if wanted is not None:
                deployments = deployments.filter(**{f"{name}_id": wanted})
        return deployments

    @extend_schema(
        summary="Deployments you may see, newest first",
        parameters=[
            OpenApiParameter("status", str, enum=Status.values),
            OpenApiParameter("environment", int, description="Environment id."),
            OpenApiParameter("release", int, description="Release id."),
            OpenApiParameter(
                "awaiting",
                str,
                enum=["me"],
                description="Only what you may approve now, oldest first.",
            ),
        ],
        responses={200: DeploymentSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Request a deployment of a release to an environment",
        request=DeploymentCreateSerializer,
        responses={201: DeploymentSerializer, **_errors(400, 403, 409, 503)},
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        given = DeploymentCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        release = visible_releases(request.user).filter(pk=data["release"]).first()
        if release is None:
            raise _field_error("release", f"No release {data['release']}.")
        environment = (
            Environment.objects.filter(pk__in=visible_environments(request.user).values("pk"))
            .filter(pk=data["environment"])
            .first()
        )
        if environment is None:
            raise _field_error("environment", f"No environment {data['environment']}.")
        deployment = Deployment.request(
            release, environment, request.user, data["reason"],
            not_before=data.get("not_before"), not_after=data.get("not_after"),
        )  # fmt: skip
        body = DeploymentSerializer(visible_deployments(request.user).get(pk=deployment.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(summary="One deployment with its approvals")
class DeploymentDetail(generics.RetrieveAPIView):
    serializer_class = DeploymentSerializer

    def get_queryset(self) -> QuerySet[Deployment]:
        return visible_deployments(self.request.user)


class DeploymentDecision(generics.GenericAPIView):
    """POST-only: approve, reject or cancel a deployment (see the subclasses)."""

    serializer_class = DecisionSerializer

    def get_queryset(self) -> QuerySet[Deployment]:
        return visible_deployments(self.request.user)

    def decide(self, deployment: Deployment, user, comment: str) -> None:
        raise NotImplementedError

    def post(self, request: Request, pk: int) -> Response:
        deployment = get_object_or_404(self.get_queryset(), pk=pk)
        given = DecisionSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        self.seen_digest = given.validated_data["digest"]
        self.decide(deployment, request.user, given.validated_data["comment"])
        return Response(DeploymentSerializer(self.get_queryset().get(pk=pk)).data)


def _decision_schema(summary: str):
    return extend_schema(
        summary=summary,
        request=DecisionSerializer,
        responses={200: DeploymentSerializer, **_errors(400, 403, 404, 409)},
    )


def caller_authentication(request: Request) -> Authentication | None:
    """How the caller proved who they are: an API token, or the browser
    session's last sign-in (the session API, e.g. HTMX)."""
    if isinstance(request.auth, ApiToken):
        return Authentication("api_token", None, {"token": request.auth.hint})
    return mfa.of_session(request._request.session)


@extend_schema(
    summary="Approve (bound to the artifacts and plan hash shown now)",
    description="Where the environment asks for a fresh MFA (approval_mfa_minutes), an API "
    "token cannot prove one: the answer is 403 and the approval must be given in the browser.",
    request=DecisionSerializer,
    responses={200: DeploymentSerializer, **_errors(400, 403, 404, 409)},
)
class DeploymentApprove(DeploymentDecision):
    def decide(self, deployment: Deployment, user, comment: str) -> None:
        deployment.approve(user, comment, authentication=caller_authentication(self.request),
                           seen_digest=self.seen_digest)  # fmt: skip


@_decision_schema("Reject (a comment is required); ends the request")
class DeploymentReject(DeploymentDecision):
    def decide(self, deployment: Deployment, user, comment: str) -> None:
        deployment.reject(user, comment, authentication=caller_authentication(self.request))


@_decision_schema("Cancel a request not yet running (requester or environment admin)")
class DeploymentCancel(DeploymentDecision):
    def decide(self, deployment: Deployment, user, comment: str) -> None:
        deployment.cancel(user, comment)


# One call returns at most this many lines; a client catching up calls again
# with the last seq it got until fewer come back.
MAX_LOG_LINES = 1000


class DeploymentLogs(generics.GenericAPIView):
    """The polling fallback of the live log panel (and a way for tools to tail a run)."""

    serializer_class = DeploymentLogsSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Deployment]:
        return Deployment.objects.filter(
            environment_id__in=visible_environments(self.request.user).values("pk")
        )

    @extend_schema(
        summary="Log lines of a deployment after a seq, oldest first (at most 1000)",
        parameters=[
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                description="Return lines with a seq above this (default 0).",
            )
        ],
        responses={200: DeploymentLogsSerializer, **_errors(400, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        deployment = get_object_or_404(self.get_queryset(), pk=pk)
        reject_nul_bytes(request.query_params, ["after"])
        # LogLine.seq is a 32-bit column.
        after = whole_number(request.query_params, "after", default=0, maximum=2**31 - 1)
        rows = (
            LogLine.objects.filter(deployment=deployment, seq__gt=after)
            .order_by("seq")
            .values_list("seq", "step__name", "stream", "text", "at")[:MAX_LOG_LINES]
        )
        lines = [
            line_payload(seq, step or "", stream, text, at) for seq, step, stream, text, at in rows
        ]
        return Response({"lines": lines, "status": deployment.status})


class DeploymentEvidence(generics.GenericAPIView):
    """The evidence pack of a deployment (the same data as the JSON download)."""

    pagination_class = None
    # Each export is audited: a HEAD must not write an export nobody received.
    http_method_names = ["get", "options"]

    def get_queryset(self) -> QuerySet[Deployment]:
        return visible_deployments(self.request.user)

    @extend_schema(
        summary="Evidence pack: artifacts, plan, cost, approvals, policy, steps, log hash, "
        "alarms during the bake, audit events and their chain check",
        responses={
            200: OpenApiResponse(
                response=OpenApiTypes.OBJECT,
                description="The pack (format gantry-evidence/1); see docs/ARCHITECTURE.md.",
            ),
            **_errors(404),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        deployment = get_object_or_404(self.get_queryset(), pk=pk)
        return Response(evidence.export_pack(deployment, request.user, "api"))


# A plan of a few thousand resources is a few MB of JSON; anything bigger is no
# plan a person reviews, and parsing it would tie up a web worker.
MAX_PLAN_BYTES = 10 * 1024 * 1024
PRICING_ROLES = (Role.DEPLOYER, Role.APPROVER, Role.ADMIN)


class CostComponentSerializer(serializers.Serializer):
    name = serializers.CharField()
    unit = serializers.CharField()
    quantity = serializers.CharField()
    unit_price_usd = serializers.CharField()
    monthly_usd = serializers.CharField()
    usage_assumed = serializers.BooleanField(help_text="Priced at a default usage, not the plan.")
    assumption = serializers.CharField(help_text="The default usage, when usage_assumed.")


class CostResourceSerializer(serializers.Serializer):
    address = serializers.CharField()
    type = serializers.CharField()
    actions = serializers.ListField(child=serializers.CharField())
    monthly_usd = serializers.CharField(help_text="After the plan, e.g. '32.85'.")
    previous_monthly_usd = serializers.CharField(help_text="What runs now.")
    delta_usd = serializers.CharField()
    components = CostComponentSerializer(many=True)
    note = serializers.CharField(help_text="Why a resource costs nothing, e.g. 'no charge'.")


class NotPricedSerializer(serializers.Serializer):
    address = serializers.CharField()
    type = serializers.CharField()
    reason = serializers.CharField()


class CostEstimateSerializer(serializers.Serializer):
    region = serializers.CharField()
    catalog_version = serializers.CharField()
    catalog_source = serializers.CharField()
    catalog_date = serializers.CharField()
    monthly_total_usd = serializers.CharField(help_text="Decimal string, USD a month.")
    previous_monthly_usd = serializers.CharField()
    delta_usd = serializers.CharField()
    resources = CostResourceSerializer(many=True)
    not_priced = NotPricedSerializer(many=True)


# What the estimate reads of `terraform show -json` output; anything else in it
# (values, configuration) is read when present and ignored when not understood.
PLAN_SCHEMA = {
    "type": "object",
    "description": "A plan as `terraform show -json <planfile>` prints it.",
    "required": ["format_version"],
    "properties": {
        "format_version": {"type": "string", "example": "1.2"},
        "resource_changes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["address", "type", "change"],
                "properties": {
                    "address": {"type": "string", "example": "aws_ecs_service.api"},
                    "type": {"type": "string", "example": "aws_ecs_service"},
                    "name": {"type": "string"},
                    "mode": {"type": "string", "description": "Only `managed` is priced."},
                    "module_address": {"type": "string"},
                    "change": {
                        "type": "object",
                        "required": ["actions"],
                        "properties": {
                            "actions": {"type": "array", "items": {"type": "string"}},
                            "before": {"type": "object", "nullable": True},
                            "after": {"type": "object", "nullable": True},
                        },
                    },
                },
            },
        },
        "configuration": {"description": "Read for references between resources when an object."},
    },
}


def plan_too_large(request: Request) -> Response | None:
    """The 413 for a plan body over MAX_PLAN_BYTES, or None."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= MAX_PLAN_BYTES:
        return None
    return Response(
        {"detail": f"The plan is {length} bytes; the limit is {MAX_PLAN_BYTES}."},
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


class PlanParser(JSONParser):
    """JSON, where nesting too deep for Python's parser is the caller's error, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply for a plan.") from None


class CostEstimateCreate(generics.GenericAPIView):
    """Price a `terraform show -json` plan, so CI can see what a change costs
    before it asks for a deployment. Stores nothing: the plan job keeps the
    estimate of a real deployment."""

    serializer_class = CostEstimateSerializer
    parser_classes = [PlanParser]
    pagination_class = None

    @extend_schema(
        summary="Monthly cost of a Terraform plan (terraform show -json), before and after",
        parameters=[
            OpenApiParameter("region", str, required=True, enum=pricing.known_regions(),
                             description="AWS region whose prices apply."),
        ],
        request={"application/json": PLAN_SCHEMA},
        responses={
            200: CostEstimateSerializer, **_errors(400, 403),
            413: OpenApiResponse(description=f"The plan is over {MAX_PLAN_BYTES} bytes."),
        },
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        if not has_role_anywhere(request.user, *PRICING_ROLES):
            raise Forbidden(
                "Pricing plans is for deployers, approvers and admins of an environment; "
                "ask an environment's admin for a role."
            )
        reject_nul_bytes(request.query_params, ["region"])
        region = request.query_params.get("region", "").strip()
        if not region:
            regions = ", ".join(pricing.known_regions())
            raise _field_error("region", f"Give ?region=, one of: {regions}.")
        if too_large := plan_too_large(request):
            return too_large
        try:
            estimate = pricing.estimate_plan(request.data, region)
        except pricing.UnknownRegion as exc:
            raise _field_error("region", str(exc)) from None
        except pricing.PlanError as exc:
            raise _field_error("plan", str(exc)) from None
        return Response(estimate.as_json())
