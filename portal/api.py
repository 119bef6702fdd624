"""API endpoints of the portal itself: the audit trail, the OpenAPI schema
and its readable reference (Swagger UI, served from local static files)."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.db.models import QuerySet
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny, IsAuthenticated

from portal.audit_filters import FILTER_NAMES, AuditFilter, filtered_events
from portal.core.api_params import reject_nul_bytes
from portal.core.models import AuditEvent


class HashedTokenScheme(OpenApiAuthenticationExtension):
    """Describes `Authorization: Token <key>` in the schema (registered on import)."""

    target_class = "portal.core.api_auth.HashedTokenAuthentication"
    match_subclasses = True  # the SSO-checked variant (portal.sso) too
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Token"
        )


class EnvironmentScopeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.SlugField(allow_null=True)


class AuditEventSerializer(serializers.ModelSerializer):
    """One event as the export shows it; `hash`/`prev_hash` let a reader follow the chain."""

    actor = serializers.CharField(source="actor_name")
    target = serializers.CharField(source="target_repr")
    application = serializers.SerializerMethodField()
    environment = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "seq", "at", "actor", "action", "target_type", "target_id", "target",
            "application", "environment", "before", "after", "ip", "request_id",
            "hash", "prev_hash",
        ]  # fmt: skip

    def get_application(self, event: AuditEvent) -> str | None:
        # The trail outlives what it speaks of: a deleted application reads as null.
        return event.application.slug if event.application is not None else None

    @extend_schema_field(EnvironmentScopeSerializer(allow_null=True))
    def get_environment(self, event: AuditEvent) -> dict | None:
        if event.environment_id is None:
            return None
        env = event.environment
        return {"id": event.environment_id, "slug": env.slug if env is not None else None}


@extend_schema(
    summary="The audit trail you may see, newest first (same filters as the audit page)",
    parameters=[
        OpenApiParameter("actor", str, description="Username."),
        OpenApiParameter("application", str, description="Application slug."),
        OpenApiParameter("environment", int, description="Environment id."),
        OpenApiParameter("action", str, description="e.g. deployment.requested"),
        OpenApiParameter("since", OpenApiTypes.DATE, description="First day, YYYY-MM-DD."),
        OpenApiParameter(
            "until", OpenApiTypes.DATE, description="Last day, YYYY-MM-DD (inclusive)."
        ),
    ],
    responses={
        200: AuditEventSerializer(many=True),
        400: OpenApiResponse(description="A filter is malformed; the body names it."),
    },
)
class AuditEventList(generics.ListAPIView):
    serializer_class = AuditEventSerializer

    def get_queryset(self) -> QuerySet[AuditEvent]:
        params = self.request.query_params
        reject_nul_bytes(params, FILTER_NAMES)
        # The page's form sends empty fields for "any"; an API client sending an
        # empty date or id has made a mistake worth naming.
        empty = [name for name in ("environment", "since", "until") if name in params
                 and not params[name].strip()]  # fmt: skip
        if empty:
            raise serializers.ValidationError({name: ["Give a value or leave it out."]
                                               for name in empty})  # fmt: skip
        audit_filter = AuditFilter.parse(self.request.query_params)
        if audit_filter.errors:
            raise serializers.ValidationError(
                {name: [message] for name, message in audit_filter.errors.items()}
            )
        return filtered_events(self.request.user, audit_filter).select_related(
            "application", "environment"
        )


class SchemaView(SpectacularAPIView):
    """The OpenAPI document, JSON unless ?format=yaml. Signed-in users only:
    it is no secret, but nothing under /api/ answers anonymous callers."""

    permission_classes = [IsAuthenticated]
    renderer_classes = [
        OpenApiJsonRenderer,
        OpenApiJsonRenderer2,
        OpenApiYamlRenderer,
        OpenApiYamlRenderer2,
    ]


class ApiDocsView(SpectacularSwaggerView):
    """The API reference for people: Swagger UI over /api/v1/schema/, its
    assets from drf-spectacular-sidecar through the portal's own static files
    (no CDN: the portal works air-gapped). A page, so someone not signed in
    is sent to the sign-in page rather than answered with JSON."""

    url_name = "api-schema"
    title = "Gantry API reference"
    permission_classes = [AllowAny]  # checked below, to redirect instead of a 403

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return super().get(request, *args, **kwargs)
