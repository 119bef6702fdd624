"""API endpoints about an environment that compose the catalog with what
deployments did there: its detail (with the release that runs now), rollback,
and its costs against the estimate of what runs."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from deployments import rollback
from deployments.api import visible_deployments
from deployments.models import Release, current_estimates
from deployments.serializers import DeploymentSerializer
from environments.costs import month_to_date
from environments.models import Environment
from environments.serializers import EnvironmentDetailSerializer, RollbackSerializer
from portal.core.choices import Role
from portal.core.roles import Forbidden, PolicyError, has_role, visible_environments


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
        latest = env.deployments.runs_now()
        env.current_release = latest.release if latest else None
        return env


class EnvironmentRollback(generics.GenericAPIView):
    """POST-only: bring back a release that succeeded here (deployments/rollback.py)."""

    serializer_class = RollbackSerializer

    def get_queryset(self) -> QuerySet[Environment]:
        return visible_environments(self.request.user)

    @extend_schema(
        summary="Roll back to a release that succeeded here",
        description="Without `release`, the newest release that succeeded here as a forward "
        "deployment and was not rolled back from since, other than what runs now (rolling back "
        "twice goes further back, never forward). Approvals needed follow the environment's "
        "rollback_required_approvals.",
        request=RollbackSerializer,
        responses={
            201: DeploymentSerializer,
            400: OpenApiResponse(
                description="No reason, nothing to roll back to, or a release that never "
                "succeeded here (or runs now)."
            ),
            403: OpenApiResponse(description="You need the deployer role here."),
            404: OpenApiResponse(description="Not found, or not visible to you."),
            409: OpenApiResponse(description="That release already has an open request here."),
            503: OpenApiResponse(description="The job queue (Redis) is down; nothing written."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        env = get_object_or_404(Environment.objects.filter(pk__in=self.get_queryset()), pk=pk)
        # Checked first, so someone without the role learns nothing about the history.
        if not has_role(request.user, env, Role.DEPLOYER):
            raise Forbidden(f"You need the deployer role in {env} to roll back.")
        given = RollbackSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        release = None
        if "release" in given.validated_data:
            release = Release.objects.filter(pk=given.validated_data["release"]).first()
            if release is None:
                raise PolicyError("No such release.", field="release")
        deployment = rollback.request_rollback(
            env, request.user, given.validated_data["reason"], release=release
        )
        body = DeploymentSerializer(visible_deployments(request.user).get(pk=deployment.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


class DailyCostSerializer(serializers.Serializer):
    day = serializers.DateField()
    amount_usd = serializers.DecimalField(max_digits=12, decimal_places=4)
    estimated = serializers.BooleanField(help_text="Cost Explorer may still restate this day.")


class BudgetAlertSerializer(serializers.Serializer):
    month = serializers.DateField(help_text="First day of the month.")
    threshold_percent = serializers.IntegerField()
    spent_usd = serializers.DecimalField(max_digits=12, decimal_places=2)
    forecast_usd = serializers.DecimalField(max_digits=12, decimal_places=2)
    budget_usd = serializers.DecimalField(max_digits=12, decimal_places=2)
    created_at = serializers.DateTimeField(help_text="When the alert was sent.")


class EnvironmentCostsSerializer(serializers.Serializer):
    currency = serializers.CharField()
    month = serializers.DateField(help_text="The month the figures are for (its first day).")
    month_to_date_usd = serializers.DecimalField(max_digits=12, decimal_places=2)
    forecast_usd = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True,
        help_text="Linear run-rate: month to date ÷ days reported × days in the month.",
    )  # fmt: skip
    budget_usd = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    budget_used_percent = serializers.DecimalField(max_digits=12, decimal_places=1, allow_null=True)
    estimate_monthly_usd = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True,
        help_text="Cost estimate of the latest succeeded deployment (what runs now).",
    )  # fmt: skip
    estimate_recorded = serializers.BooleanField(
        help_text="The estimate was priced from a saved `terraform show -json`, not from a "
        "plan Gantry ran for that deployment.",
    )
    daily = DailyCostSerializer(many=True)
    alerts = BudgetAlertSerializer(many=True)


class CostRangeSerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=400, default=30)


class EnvironmentCosts(generics.GenericAPIView):
    """Actual spend of one environment, from the daily Cost Explorer snapshots."""

    serializer_class = EnvironmentCostsSerializer

    def get_queryset(self) -> QuerySet[Environment]:
        return visible_environments(self.request.user)

    @extend_schema(
        summary="Actual spend: daily figures, month to date, forecast, budget and alerts",
        parameters=[CostRangeSerializer],
        responses={
            200: EnvironmentCostsSerializer,
            400: OpenApiResponse(description="`days` is not a number from 1 to 400."),
            404: OpenApiResponse(description="Not found, or not visible to you."),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        env = get_object_or_404(Environment.objects.filter(pk__in=self.get_queryset()), pk=pk)
        given = CostRangeSerializer(data=request.query_params)
        given.is_valid(raise_exception=True)
        today = timezone.now().date()
        since = today - timedelta(days=given.validated_data["days"])
        figures = month_to_date([env], today)[env.pk]
        estimate = current_estimates([env.pk]).get(env.pk)
        body = {
            "currency": "USD",
            "month": figures.month,
            "month_to_date_usd": figures.spent_usd,
            "forecast_usd": figures.forecast_usd,
            "budget_usd": figures.budget_usd,
            "budget_used_percent": figures.budget_used_percent,
            "estimate_monthly_usd": estimate.monthly_total_usd if estimate else None,
            "estimate_recorded": bool(estimate and estimate.recorded),
            "daily": env.cost_snapshots.filter(day__gte=since, day__lt=today).order_by("day"),
            "alerts": env.budget_alerts.order_by("-month", "-threshold_percent")[:24],
        }
        return Response(EnvironmentCostsSerializer(body).data)
