"""Drift: what runs in an environment against what Gantry deployed there.

One row per environment, written by deployments/drift.py. Each source kind
(`service`: ECS services and Kubernetes Deployments; `terraform`: a plan of
the environment's Terraform with the current release's variables) is checked
on its own and replaces only its own items and reason, so a fast runtime
check does not wipe what the slower Terraform check found.
"""

from __future__ import annotations

from django.db import models, transaction
from django.utils import timezone

from deployments.choices import DriftKind, DriftState, NotificationEvent
from deployments.models.notification import announce_environment
from environments.live import environment_changed
from environments.models import Environment
from portal.core import audit


class EnvironmentDrift(models.Model):
    environment = models.OneToOneField(Environment, on_delete=models.CASCADE, related_name="drift")
    state = models.CharField(max_length=8, choices=DriftState.choices, default=DriftState.UNKNOWN)
    # [{"kind", "name", "expected", "actual"}]
    items = models.JSONField(default=list)
    # {kind: why that source could not be read}; any entry makes the state unknown.
    reasons = models.JSONField(default=dict)
    checked_at = models.DateTimeField(null=True, blank=True)
    # When the current state began (drift "for 2 h").
    since = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.environment}: {self.state}"

    def as_dict(self) -> dict:
        return {
            "state": self.state,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "since": self.since.isoformat(),
            "items": self.items,
            "reasons": self.reasons,
        }


def state_of(items: list[dict], reasons: dict) -> str:
    if reasons:
        return DriftState.UNKNOWN  # a source that cannot be read is never "in sync"
    return DriftState.DRIFTED if items else DriftState.IN_SYNC


def record(environment_id: int, kind: str, items: list[dict], reason: str = "") -> EnvironmentDrift:
    """Replace what `kind` found in the environment; a change of state is
    audited, notified and pushed to open dashboards."""
    now = timezone.now()
    with transaction.atomic():
        drift, _ = EnvironmentDrift.objects.select_for_update().get_or_create(
            environment_id=environment_id
        )
        before = drift.state if drift.checked_at else None
        shown_before = (drift.state, drift.items, drift.reasons)
        drift.items = [i for i in drift.items if i["kind"] != kind] + items
        reasons = {k: v for k, v in drift.reasons.items() if k != kind}
        if reason:
            reasons[kind] = reason
        drift.reasons = reasons
        drift.state = state_of(drift.items, reasons)
        drift.checked_at = now
        if drift.state != before:
            drift.since = now
        drift.save()
        if before is not None and drift.state != before:
            _announce(drift, before)
    # A sweep finds most environments as they were: their cards stay cached.
    if (drift.state, drift.items, drift.reasons) != shown_before:
        environment_changed(environment_id, "drift")
    return drift


def resolve_services(environment_id: int) -> None:
    """A deployment or rollback just succeeded here: it set every service's
    images, so the runtime drift it covers is gone."""
    if EnvironmentDrift.objects.filter(environment_id=environment_id).exists():
        record(environment_id, DriftKind.SERVICE, [])


def _announce(drift: EnvironmentDrift, before: str) -> None:
    environment = drift.environment
    audit.record(
        "environment.drift_changed", environment, environment=environment,
        before={"state": before}, after=drift.as_dict(),
    )  # fmt: skip
    names = ", ".join(item["name"] for item in drift.items[:5]) or "-"
    reasons = "; ".join(f"{k}: {v}" for k, v in drift.reasons.items())
    body = {
        DriftState.DRIFTED: f"What runs differs from what Gantry deployed: {names}.",
        DriftState.IN_SYNC: "What runs matches what Gantry deployed again.",
        DriftState.UNKNOWN: f"Drift could not be checked: {reasons}.",
    }[drift.state]
    announce_environment(
        environment, NotificationEvent.DRIFT,
        f"{environment}: drift {before.replace('_', ' ')} → {drift.get_state_display().lower()}",
        body,
    )  # fmt: skip
