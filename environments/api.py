"""API endpoints for the catalog: applications and environments."""

from __future__ import annotations

from django.db.models import F, Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics

from deployments.choices import Status
from environments.models import Application, Environment
from environments.serializers import ApplicationSerializer, EnvironmentDetailSerializer
from portal.roles import visible_applications, visible_environments


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
