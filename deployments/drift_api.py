"""Drift over the API: read an environment's drift, ask for a check now."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from deployments import drift
from deployments.api import _errors
from deployments.choices import DriftState
from deployments.models import EnvironmentDrift
from portal.core.roles import visible_environments


class DriftItemSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["service", "terraform"])
    name = serializers.CharField(help_text="cluster/service/container, namespace/deployment/"
                                 "container, or the Terraform resource address.")  # fmt: skip
    expected = serializers.CharField()
    actual = serializers.CharField()


class DriftSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=DriftState.values)
    checked_at = serializers.DateTimeField(allow_null=True)
    since = serializers.DateTimeField(allow_null=True, help_text="When this state began.")
    items = DriftItemSerializer(many=True)
    reasons = serializers.DictField(
        child=serializers.CharField(),
        help_text="Why a source could not be read ({kind: reason}); makes the state unknown.",
    )


def _environment(request: Request, pk: int):
    return get_object_or_404(visible_environments(request.user), pk=pk)


class EnvironmentDriftDetail(generics.GenericAPIView):
    serializer_class = DriftSerializer
    pagination_class = None

    @extend_schema(
        summary="What runs in the environment against what Gantry deployed there",
        responses={200: DriftSerializer, **_errors(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        environment = _environment(request, pk)
        drift = EnvironmentDrift.objects.filter(environment=environment).first()
        if drift is None:
            return Response({"state": DriftState.UNKNOWN, "checked_at": None, "since": None,
                             "items": [], "reasons": {"all": "Not checked yet."}})  # fmt: skip
        return Response(drift.as_dict())


class EnvironmentDriftCheck(generics.GenericAPIView):
    serializer_class = DriftSerializer
    pagination_class = None

    @extend_schema(
        summary="Check drift now (deployer or above); the result follows at the GET",
        request=None,
        responses={
            202: OpenApiResponse(description="Queued; read GET …/drift/ for the result."),
            **_errors(403, 404, 503),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        environment = _environment(request, pk)
        drift.request_check(environment, request.user)
        return Response(
            {"detail": f"Drift check of {environment} queued.", "environment": environment.pk},
            status=status.HTTP_202_ACCEPTED,
        )
