"""What runs where now: each environment's latest succeeded deployment, and
the cost estimate of it."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models

from deployments.models.deployment import Deployment
from deployments.models.run import CostEstimate
from environments.models import Environment


def with_current_deployment(environments: models.QuerySet) -> models.QuerySet:
    """Annotate each environment with its latest succeeded deployment (what runs now)."""
    latest = Deployment.objects.filter(environment=models.OuterRef("pk")).succeeded_latest_first()
    return environments.annotate(
        current_deployment_id=models.Subquery(latest.values("pk")[:1]),
        current_release_id=models.Subquery(latest.values("release_id")[:1]),
    )


def current_estimates(environment_ids: Iterable[int]) -> dict[int, CostEstimate]:
    """{environment id: the cost estimate of what runs there now}, i.e. of its
    latest succeeded deployment; environments without one are left out."""
    running = with_current_deployment(Environment.objects.filter(pk__in=list(environment_ids)))
    estimates = CostEstimate.objects.filter(
        deployment__in=running.values("current_deployment_id")
    ).select_related("deployment")
    return {estimate.deployment.environment_id: estimate for estimate in estimates}
