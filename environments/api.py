"""API endpoints of the catalog's own: applications, and the alarm states of
an environment. Endpoints that show what deployments did there are composed
one level up (portal/catalog_api.py)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers

from environments.models import Application, Environment
from environments.serializers import ApplicationSerializer
from portal.core.roles import visible_applications, visible_environments


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


# -- alarms ------------------------------------------------------------------------


class AlarmSerializer(serializers.Serializer):
    name = serializers.CharField()
    source = serializers.CharField(help_text="cloudwatch or alertmanager.")
    state = serializers.CharField(
        help_text="OK, ALARM, INSUFFICIENT_DATA, or unknown: the source could not be read "
        "(the reason says why). An unreachable source is never reported as OK."
    )
    since = serializers.DateTimeField(help_text="When the alarm entered this state.")
    reason = serializers.CharField()


class AlarmTransitionSerializer(serializers.Serializer):
    alarm = serializers.CharField(source="alarm.name")
    source = serializers.CharField(source="alarm.source")
    from_state = serializers.CharField(help_text="Empty when the alarm was first seen.")
    to_state = serializers.CharField()
    reason = serializers.CharField()
    at = serializers.DateTimeField()


@extend_schema(summary="Alarm states of one environment, as last polled from its sources")
class EnvironmentAlarms(generics.ListAPIView):
    """Not paginated: an environment watches a handful of alarms."""

    serializer_class = AlarmSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet:
        env = get_object_or_404(visible_environments(self.request.user), pk=self.kwargs["pk"])
        return env.alarms.order_by("source", "name")


@extend_schema(summary="Alarm state changes of one environment, newest first")
class EnvironmentAlarmHistory(generics.ListAPIView):
    serializer_class = AlarmTransitionSerializer

    def get_queryset(self) -> QuerySet:
        env = get_object_or_404(visible_environments(self.request.user), pk=self.kwargs["pk"])
        return env.alarm_transitions.select_related("alarm").order_by("-at", "-id")
