"""What a deployment's run leaves behind: its step runs, its numbered log
lines, and the cost estimate of its Terraform plan."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from deployments.choices import StepStatus, Stream
from environments.live import environment_changed
from portal.core import audit


class StepRun(models.Model):
    """One step of one deployment's run."""

    deployment = models.ForeignKey(
        "deployments.Deployment", on_delete=models.CASCADE, related_name="step_runs"
    )
    order = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16)
    phase = models.CharField(max_length=8, default="deploy")  # plan | deploy
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    # An admin's force-unlock of the state lock in `outputs`, accepted and not
    # yet carried out by its job (deployments/state_lock.py).
    unlock_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )  # fmt: skip
    unlock_requested_at = models.DateTimeField(null=True, blank=True)
    unlock_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["deployment", "phase", "order"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "phase", "order"], name="steprun_unique_order"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.deployment_id} {self.order}. {self.name}"

    @property
    def unlock_in_progress(self) -> bool:
        """A force-unlock was requested and its job has not ended. Past the high
        queue's job timeout no job can still be at it (it was lost): the
        request may be made again."""
        if self.unlock_requested_at is None:
            return False
        timeout = settings.RQ_QUEUES["high"].get("DEFAULT_TIMEOUT", 180)
        return timezone.now() - self.unlock_requested_at < timedelta(seconds=timeout)


class LogLine(models.Model):
    """A line of a deployment's output, numbered so viewers never miss or repeat one.

    The references carry no database FOREIGN KEY constraint (db_constraint=False):
    PostgreSQL would check each one per inserted row, which was more than half
    the cost of storing a batch, and the check's KEY SHARE lock on the
    deployment row made every batch wait while the row was locked for a state
    change. Lines are written only by the engine for rows it has just loaded,
    and deployments and step runs are never deleted.

    The primary key is the natural one, (deployment, seq): a surrogate id
    meant a sequence value and a second index written for every line, a third
    of what storing a line cost the database (docs/PERFORMANCE.md).
    """

    pk = models.CompositePrimaryKey("deployment", "seq")
    # No index of their own either: the primary key serves every read, and
    # each extra index is written for every line.
    deployment = models.ForeignKey(
        "deployments.Deployment",
        on_delete=models.CASCADE,
        related_name="log_lines",
        db_constraint=False,
        db_index=False,
    )
    seq = models.PositiveIntegerField()
    step = models.ForeignKey(
        StepRun,
        null=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    stream = models.CharField(max_length=6, choices=Stream.choices, default=Stream.STDOUT)
    text = models.TextField()
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deployment", "seq"]

    def __str__(self) -> str:
        return f"#{self.deployment_id}:{self.seq} {self.text[:60]}"


class CostEstimate(models.Model):
    """The monthly cost of what a deployment's Terraform plan leaves running,
    priced from the bundled catalog, and its difference to what runs now.

    `resources`: [{"address", "type", "monthly_usd", "previous_monthly_usd",
    "components": [{"name", "unit", "quantity", "unit_price_usd", "monthly_usd",
    "usage_assumed"}]}]; `not_priced`: [{"address", "type", "reason"}].
    """

    deployment = models.OneToOneField(
        "deployments.Deployment", on_delete=models.CASCADE, related_name="cost_estimate"
    )
    region = models.CharField(max_length=32)
    monthly_total_usd = models.DecimalField(max_digits=12, decimal_places=2)
    previous_monthly_usd = models.DecimalField(max_digits=12, decimal_places=2)
    resources = models.JSONField(default=list)
    not_priced = models.JSONField(default=list)
    catalog_version = models.CharField(max_length=64)
    # Pages label such an estimate "recorded": nobody should take it for what
    # Gantry's own plan of this deployment said.
    recorded = models.BooleanField(
        default=False,
        help_text="Priced from a saved `terraform show -json`, not from a plan Gantry ran "
        "for this deployment.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.deployment}: ${self.monthly_total_usd}/month"

    @classmethod
    def record_saved_plan(cls, deployment, cost: dict, plan: str) -> CostEstimate:
        """Attach the estimate of a saved plan (`plan` names the file; `cost` is
        `environments.pricing.estimate_plan(...).as_json()`) to a deployment
        that has none, marked `recorded` and audited. An estimate already
        there, from Gantry's own plan or an earlier call, is kept."""
        with transaction.atomic():
            estimate, created = cls.objects.get_or_create(deployment=deployment, defaults={
                "region": cost["region"], "catalog_version": cost["catalog_version"],
                "monthly_total_usd": cost["monthly_total_usd"],
                "previous_monthly_usd": cost["previous_monthly_usd"],
                "resources": cost["resources"], "not_priced": cost["not_priced"],
                "recorded": True,
            })  # fmt: skip
            if created:
                audit.record("deployment.cost_recorded", deployment, after={
                    "plan": plan, "region": cost["region"],
                    "monthly_total_usd": cost["monthly_total_usd"],
                    "catalog_version": cost["catalog_version"],
                })  # fmt: skip
                environment_changed(deployment.environment_id, "cost")
        return estimate

    @property
    def delta_usd(self):
        return self.monthly_total_usd - self.previous_monthly_usd
