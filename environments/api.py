"""API endpoints for the catalog: applications and environments."""

from __future__ import annotations

from django.db.models import F, Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from deployments.api import visible_deployments
from deployments.choices import Status
from deployments.models import Deployment
from deployments.serializers import DeploymentSerializer
from environments.models import Application, Environment
from environments.serializers import (
    ApplicationSerializer,
    EnvironmentDetailSerializer,
    RollbackSerializer,
)
from portal.choices import Role
from portal.roles import Forbidden, has_role, visible_applications, visible_environments


@extend_schema(summary="Applications you may see, with their services and environments")
class ApplicationList(generics.ListAPIView):
    """Not paginated: a portal holds a handful of applications, and the
    catalog is read whole by tools that map slugs to environment ids."""

    serializer_class = ApplicationSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Application]:
        user = self.request.user
        environments = Environment.objects.filter(
            pk__in=visible_environments(user).values("pk")
        ).order_by("order")
        return visible_applications(user).prefetch_related(
            "services",
            Prefetch("environments", queryset=environments, to_attr="visible_environments"),
        )


@extend_schema(summary="One environment: protection rules, freeze state, current release")
class EnvironmentDetail(generics.RetrieveAPIView):
    serializer_class = EnvironmentDetailSerializer

    def get_queryset(self) -> QuerySet[Environment]:
        return visible_environments(self.request.user).select_related(
            "application", "approver_group", "second_approver_group"
        )

    def get_object(self) -> Environment:
        env = get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])
        env.freeze = env.active_freeze()
        env.override = env.active_override()
        latest = (
            env.deployments.filter(status=Status.SUCCEEDED)
            .select_related("release")
            .order_by(F("finished_at").desc(nulls_last=True), "-id")
            .first()
        )
        env.current_release = latest.release if latest else None
        return env


class EnvironmentRollback(generics.GenericAPIView):
    """POST-only: bring back the release that ran here before the current one."""

    serializer_class = RollbackSerializer

    def get_queryset(self) -> QuerySet[Environment]:
        return visible_environments(self.request.user)

    @extend_schema(
        summary="Roll back to the previous release that succeeded here",
        description="Approvals needed follow the environment's rollback_required_approvals.",
        request=RollbackSerializer,
        responses={
            201: DeploymentSerializer,
            400: OpenApiResponse(description="No reason, or nothing to roll back to."),
            403: OpenApiResponse(description="You need the deployer role here."),
            404: OpenApiResponse(description="Not found, or not visible to you."),
            409: OpenApiResponse(description="That release already has an open request here."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        env = get_object_or_404(Environment.objects.filter(pk__in=self.get_queryset()), pk=pk)
        # Checked first, so someone without the role learns nothing about the history.
        if not has_role(request.user, env, Role.DEPLOYER):
            raise Forbidden(f"You need the deployer role in {env} to roll back.")
        given = RollbackSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        deployment = Deployment.request_rollback(env, request.user, given.validated_data["reason"])
        body = DeploymentSerializer(visible_deployments(request.user).get(pk=deployment.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)
