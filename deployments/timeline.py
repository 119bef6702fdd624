"""The life of one deployment as a list of dated entries, for its page.

Built from the deployment's own audit events (one query, through the
(target_type, target_id, seq) index of AuditEvent) and the StepRun rows the
caller has already loaded. The audit events carry who acted; the step runs
carry what the engine did and for how long.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from django.utils.html import html_safe
from django.utils.safestring import mark_safe

from deployments.models import StepRun
from environments.choices import StepKind
from portal.core.models import AuditEvent
from portal.core.templatetags.local_time import local

# What each audit action means on a timeline; actions not listed are shown by name.
LABELS = {
    "deployment.requested": "Requested",
    "deployment.rollback_started": "Automatic rollback requested",
    "deployment.planned": "Planned",
    "deployment.cost_recorded": "Cost estimate recorded (from a saved plan)",
    "deployment.policy_evaluated": "Plan checked against the policies",
    "deployment.policy_overridden": "Policy findings overridden",
    "deployment.awaiting_approval": "Awaiting approval",
    "deployment.approved": "Approved",
    "deployment.rejected": "Rejected",
    "deployment.queued": "Queued",
    "deployment.started": "Started",
    "deployment.cancel_requested": "Cancel requested",
    "deployment.succeeded": "Succeeded",
    "deployment.failed": "Failed",
    "deployment.cancelled": "Cancelled",
    "deployment.expired": "Expired",
    "evidence.exported": "Evidence pack exported",
    "terraform.force_unlock_requested": "Terraform force-unlock requested",
    "terraform.force_unlocked": "Terraform state lock force-unlocked",
    "terraform.force_unlock_failed": "Terraform force-unlock failed",
}
COLOURS = {
    "deployment.approved": "green",
    "deployment.succeeded": "green",
    "deployment.rejected": "red",
    "deployment.failed": "red",
    "deployment.cancelled": "grey",
    "deployment.expired": "grey",
    "deployment.policy_overridden": "amber",
    "terraform.force_unlocked": "amber",
    "terraform.force_unlock_failed": "red",
}


@html_safe  # {{ entry }} renders the markup below, unescaped (it escapes its values)
@dataclass
class TimelineEntry:
    """One moment of a deployment's life; `duration` is what a step took."""

    at: datetime
    label: str
    actor: str = ""
    detail: str = ""
    colour: str = "blue"
    action: str = ""
    seq: int | None = None  # the audit event's position in the chain
    duration: timedelta | None = None
    since_previous: timedelta | None = None

    @property
    def at_text(self) -> str:
        """As the page shows it, in the portal's time zone (what the `date`
        filter with "Y-m-d H:i:s T" gives, at a fraction of its cost: a long
        timeline has a hundred of these)."""
        return local(self.at, "%Y-%m-%d %H:%M:%S %Z")

    @property
    def duration_text(self) -> str:
        return format_duration(self.duration)

    @property
    def since_previous_text(self) -> str:
        return format_duration(self.since_previous)

    def __str__(self) -> str:
        """The entry as the timeline lists it: `{{ entry }}` in a template.

        Built here rather than in the template: a long timeline has a hundred
        entries, and the template engine took ~180 µs for each one's dozen
        lookups and conditions (~15 ms of the deployment page). Every value is
        escaped exactly as the template escaped it (Django's `escape` is
        `html.escape`), by the standard library's function directly.
        """
        gap, duration = self.since_previous_text, self.duration_text
        return mark_safe(  # noqa: S308 - every value below goes through escape()
            f'<li class="timeline-entry timeline-{escape(self.colour)}"'
            f' data-action="{escape(self.action)}">'
            + (f'<div class="timeline-gap" data-testid="timeline-gap">+{escape(gap)}</div>'
               if gap else "")
            + f'<time datetime="{self.at.isoformat()}">{escape(self.at_text)}</time> '
            f'<strong data-testid="timeline-label">{escape(self.label)}</strong>'
            + (f' <span class="muted">by {escape(self.actor)}</span>' if self.actor else "")
            + (' <span class="badge badge-grey" title="How long the step ran">'
               f"{escape(duration)}</span>" if duration else "")
            + (f" <div><small>{escape(self.detail)}</small></div>" if self.detail else "")
            + (' <small class="muted" title="Position in the audit chain">'
               f"event #{self.seq}</small>" if self.seq else "")
            + "</li>"
        )  # fmt: skip


def format_duration(span: timedelta | None) -> str:
    """ "1 h 02 min", "3 min 05 s", "12.4 s": precise enough to read, short enough to scan."""
    if span is None:
        return ""
    seconds = span.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def deployment_events(deployment):
    """The audit events about this deployment, oldest first: one range of the
    (target_type, target_id, seq) index, however busy its environment is."""
    return AuditEvent.objects.filter(
        target_type="deployments.deployment", target_id=str(deployment.pk)
    ).order_by("seq")


def _event_detail(action: str, after: dict) -> str:
    if action == "deployment.planned":
        changes = after.get("resource_changes", 0)
        return f"plan {after.get('plan_sha256', '')[:12]}, {changes} resource change(s)"
    if action == "deployment.approved":
        return f"{after.get('count', '?')} of {after.get('required', '?')} approvals"
    if action == "deployment.queued" and after.get("approvers"):
        return "approved by " + ", ".join(after["approvers"])
    if action in ("deployment.failed", "deployment.cancelled", "deployment.rejected"):
        return after.get("error") or after.get("comment") or ""
    if action == "evidence.exported":
        return f"as {after.get('format', '?')}"
    return ""


def _step_label(run) -> str:
    if run.kind == StepKind.BAKE:
        return f"Bake: {run.name}"
    prefix = "Plan" if run.phase == "plan" else "Step"
    return f"{prefix} {run.order}: {run.name}"


def build_timeline(deployment, step_runs: Iterable[StepRun]) -> list[TimelineEntry]:
    """Every audit event and step of the deployment in time order, each with the
    time since the entry before it. `step_runs` are the deployment's StepRun
    rows, in any order: the page has them already."""
    # Rows, not AuditEvent instances: a long-lived deployment has a hundred
    # events, and building a model instance for each cost more than its row.
    entries = [
        TimelineEntry(
            at=at,
            label=LABELS.get(action, action),
            actor=actor_name,
            detail=_event_detail(action, after or {}),
            colour=COLOURS.get(action, "blue"),
            action=action,
            seq=seq,
        )
        for seq, at, actor_name, action, after in deployment_events(deployment).values_list(
            "seq", "at", "actor_name", "action", "after"
        )
    ]
    started = sorted((r for r in step_runs if r.started_at), key=lambda r: (r.started_at, r.pk))
    for run in started:
        duration = run.finished_at - run.started_at if run.finished_at else None
        entries.append(
            TimelineEntry(
                at=run.started_at,
                label=_step_label(run),
                actor="gantry",
                detail=f"{run.get_status_display().lower()}"
                + (f": {run.error}" if run.error else ""),
                colour={"succeeded": "green", "failed": "red"}.get(run.status, "grey"),
                action=f"step.{run.kind}",
                duration=duration,
            )
        )
    # Stable: an event and a step at the same instant keep audit-then-step order.
    entries.sort(key=lambda entry: entry.at)
    for previous, entry in zip(entries, entries[1:], strict=False):
        entry.since_previous = entry.at - previous.at
    return entries
