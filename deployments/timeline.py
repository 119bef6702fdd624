"""The life of one deployment as a list of dated entries, for its page.

Built from the deployment's own audit events (one query, through the
(target_type, target_id, seq) index of AuditEvent) and the StepRun rows the
caller has already loaded. The audit events carry who acted; the step runs
carry what the engine did and for how long.

The page shows it through timeline_html(), which keeps each deployment's
rendered timeline in the process and reads only the events appended since
(see KeptTimelines: reading, building and rendering a hundred entries was
a sixth of the page's CPU, and its live panels fetch the page again on
every change).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from django.utils import timezone
from django.utils.html import html_safe
from django.utils.safestring import SafeString, mark_safe

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


# One audit event as the timeline needs it: (seq, at, actor_name, action, detail).
EventRow = tuple[int, datetime, str, str, str]


def _event_rows(events) -> list[tuple[EventRow, str]]:
    """The events' rows as EventRows, each with its chain hash."""
    return [
        ((seq, at, actor_name, action, _event_detail(action, after or {})), hash_)
        for seq, at, actor_name, action, after, hash_ in events.values_list(
            "seq", "at", "actor_name", "action", "after", "hash"
        )
    ]


def _entries(rows: Iterable[EventRow], step_runs: Iterable[StepRun]) -> list[TimelineEntry]:
    entries = [
        TimelineEntry(
            at=at,
            label=LABELS.get(action, action),
            actor=actor_name,
            detail=detail,
            colour=COLOURS.get(action, "blue"),
            action=action,
            seq=seq,
        )
        for seq, at, actor_name, action, detail in rows
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


def build_timeline(deployment, step_runs: Iterable[StepRun]) -> list[TimelineEntry]:
    """Every audit event and step of the deployment in time order, each with the
    time since the entry before it. `step_runs` are the deployment's StepRun
    rows, in any order: the page has them already."""
    # Rows, not AuditEvent instances: a long-lived deployment has a hundred
    # events, and building a model instance for each cost more than its row.
    return _entries((row for row, _ in _event_rows(deployment_events(deployment))), step_runs)


@dataclass
class _Kept:
    rows: list[EventRow]
    last_hash: str  # the chain hash of rows[-1]
    key: tuple  # what `html` was rendered from
    html: str


class KeptTimelines:
    """Rendered timelines kept in the process, the most recently shown first.

    A timeline changes only when an event about its deployment is appended to
    the audit chain or one of its steps moves. Events are never edited, and
    they become visible in chain order (appends are serialised by a lock held
    until commit), so the rows kept for a deployment stay right while the last
    of them is still in the chain with the same hash: that HMAC covers the
    whole chain before it. Each request therefore reads only the events from
    the last one kept on (one row when nothing happened), and renders again
    only when something did. A chain that no longer holds the last row, or
    holds another under its number (a database restored, a test rolled
    back), is read again whole.
    """

    def __init__(self, size: int = 256):
        self.size = size
        self._kept: OrderedDict[int, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def html(self, deployment, step_runs: list[StepRun]) -> SafeString:
        """The entries of build_timeline(), each rendered (TimelineEntry.__str__)
        in the current time zone, as one piece of markup."""
        with self._lock:
            kept = self._kept.get(deployment.pk)
        rows, last_hash = self._rows(deployment, kept)
        steps = tuple(
            (r.pk, r.order, r.phase, r.kind, r.name, r.status, r.error, r.started_at, r.finished_at)
            for r in step_runs
        )
        # The last event's hash stands for every event before it (see above).
        key = (last_hash, steps, timezone.get_current_timezone_name())
        if kept is not None and kept.key == key:
            html = kept.html
        else:
            html = "".join(map(str, _entries(rows, step_runs)))
        with self._lock:
            self._kept[deployment.pk] = _Kept(rows, last_hash, key, html)
            self._kept.move_to_end(deployment.pk)
            if len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return mark_safe(html)  # noqa: S308 - each entry escapes its values (TimelineEntry.__str__)

    @staticmethod
    def _rows(deployment, kept: _Kept | None) -> tuple[list[EventRow], str]:
        events = deployment_events(deployment)
        if kept is not None and kept.rows:
            last_seq = kept.rows[-1][0]
            fresh = _event_rows(events.filter(seq__gte=last_seq))
            if fresh:
                (first, first_hash), newer = fresh[0], fresh[1:]
                if first[0] == last_seq and first_hash == kept.last_hash:
                    if not newer:
                        return kept.rows, kept.last_hash
                    return kept.rows + [row for row, _ in newer], newer[-1][1]
        rows = _event_rows(events)
        return [row for row, _ in rows], rows[-1][1] if rows else ""


KEPT = KeptTimelines()


def timeline_html(deployment, step_runs: list[StepRun]) -> SafeString:
    """The deployment's timeline entries as markup, for its page ("" when empty)."""
    return KEPT.html(deployment, step_runs)
