"""Dashboard cards: what one environment's card shows, built for many
environments at once, and its HTML (kept by portal/card_cache.py, laid out by
portal/dashboard.py).

The card data costs the same handful of queries however many environments,
deployments, audit events or alarm transitions there are: one for the
environments, whose latest deployments are found by index-backed subqueries
(one probe of (environment, status, -finished_at) each); then one each for
those deployments, their approvers, the images that run, their step runs,
pending requests (a window function keeps three per environment) and alarms.
The cards read plain values (`DeploymentSummary`), not model instances: with
100 environments, building instances cost more than the queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache

from django.db import connection
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from deployments.choices import STATUS_COLOURS, Decision, DriftState, Status, StepStatus
from deployments.models import Approval, Artifact, Deployment, EnvironmentDrift, StepRun
from environments.choices import ALARM_COLOURS, ALARM_RANK, TIER_COLOURS, AlarmState, StepKind
from environments.costs import month_start, reporting_day
from environments.models import Alarm, Application, CostSnapshot, Environment, Step

# What a card may show as "last deployment": runs that ended, not refused requests.
LAST_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
PENDING_SHOWN = 3
NO_SOURCES = "none"
# Problem labels, most urgent first; a card's rank is its most urgent problem.
PROBLEMS = ("alarm", "failed", "drifted", "running", "pending", "review due", "over budget",
            "alarms unknown")  # fmt: skip
STATUS_LABELS = dict(Status.choices)
PROBLEM_COLOURS = {"alarm": "red", "failed": "red", "drifted": "red", "over budget": "red",
                   "running": "blue"}  # fmt: skip
HEALTH_COLOURS = {"healthy": "green", "unhealthy": "red"}
_SENTINEL = 918273645


@cache
def _link_pattern(name: str) -> str:
    """`reverse(name, args=[pk])` as a format string: reversed once, not for
    each of the hundreds of links a page of 100 cards holds."""
    return reverse(name, args=[_SENTINEL]).replace(str(_SENTINEL), "{}")


def link(name: str, pk: int) -> str:
    return _link_pattern(name).format(pk)


@dataclass
class StepSummary:
    kind: str
    name: str
    status: str
    finished_at: datetime | None


@dataclass
class DeploymentSummary:
    """What a card shows of one deployment."""

    pk: int
    status: str
    version: str
    release_id: int
    finished_at: datetime | None
    estimate_usd: Decimal | None
    estimate_recorded: bool | None  # priced from a saved plan, not Gantry's own
    approvers: list[str] = field(default_factory=list)
    steps: list[StepSummary] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (service, image ref)

    @property
    def url(self) -> str:
        return link("deployment-detail", self.pk)

    @property
    def release_url(self) -> str:
        return link("release-detail", self.release_id)

    @property
    def status_label(self) -> str:
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def status_colour(self) -> str:
        return STATUS_COLOURS.get(self.status, "grey")


@dataclass
class EnvironmentCard:
    """Everything one card shows about one environment."""

    environment: Environment
    current: DeploymentSummary | None = None  # what runs now: the last succeeded one
    last: DeploymentSummary | None = None
    running: DeploymentSummary | None = None
    pending: list[tuple[int, str]] = field(default_factory=list)  # (pk, version)
    pending_count: int = 0
    steps_total: int = 0
    steps_done: int = 0
    current_step: str = ""
    health: str = "unknown"
    health_at: datetime | None = None
    alarm_state: str = NO_SOURCES
    alarm_names: list[str] = field(default_factory=list)
    alarm_count: int = 0
    spend_usd: Decimal | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return link("dashboard-card", self.environment.pk)

    @property
    def budget_usd(self) -> Decimal | None:
        return self.environment.monthly_budget_usd

    @property
    def estimate_usd(self) -> Decimal | None:
        return self.current.estimate_usd if self.current else None

    @property
    def estimate_recorded(self) -> bool:
        return bool(self.current and self.current.estimate_recorded)

    @property
    def rank(self) -> int:
        return min((PROBLEMS.index(p) for p in self.problems), default=len(PROBLEMS))

    @property
    def problem_badges(self) -> list[tuple[str, str]]:
        return [(problem, PROBLEM_COLOURS.get(problem, "amber")) for problem in self.problems]

    @property
    def pending_links(self) -> list[tuple[str, int, str]]:
        return [(link("deployment-detail", pk), pk, version) for pk, version in self.pending]

    @property
    def health_colour(self) -> str:
        return HEALTH_COLOURS.get(self.health, "grey")

    @property
    def alarm_colour(self) -> str:
        return ALARM_COLOURS.get(self.alarm_state, "grey")

    @property
    def spend_month(self) -> date:
        return month_start(reporting_day())

    @property
    def spend_percent(self) -> int | None:
        if self.spend_usd is None or not self.budget_usd:
            return None
        return round(self.spend_usd * 100 / self.budget_usd)


# -- queries -----------------------------------------------------------------------


def _card_sql(count: int) -> str:
    """The cards' environments with what the cards need, for `count` ids.

    Plain SQL (PostgreSQL and SQLite alike): the same query built with the
    ORM's ten subquery annotations took longer to compile than to run. Each
    subquery is one probe of an index on (environment, ...).
    """
    d, e, a = (model._meta.db_table for model in (Deployment, Environment, Application))
    step, cost = Step._meta.db_table, CostSnapshot._meta.db_table
    drift = EnvironmentDrift._meta.db_table
    latest = ",\n".join(
        f"(SELECT d.{column} FROM {d} d WHERE d.environment_id = e.id AND d.status = %s"
        # Ties go to the later request, as in succeeded_latest_first().
        " AND d.finished_at IS NOT NULL ORDER BY d.finished_at DESC, d.id DESC LIMIT 1)"
        f" AS last_{status}_{name}"
        for status in LAST_STATUSES
        for name, column in (("id", "id"), ("at", "finished_at"))
    )
    return f"""
        SELECT e.id, e.application_id, e.slug, e.name, e.{connection.ops.quote_name("order")},
               e.tier, e.monthly_budget_usd, e.alarm_sources, e.alarms_checked_at,
               a.slug AS application_slug, a.name AS application_name,
               dr.state AS drift_state, dr.since AS drift_since, dr.items AS drift_items,
               {latest},
               (SELECT d.id FROM {d} d WHERE d.environment_id = e.id AND d.status = %s
                LIMIT 1) AS running_id,
               (SELECT COUNT(*) FROM {d} d WHERE d.environment_id = e.id AND d.status = %s)
                 AS pending_total,
               (SELECT COUNT(*) FROM {step} s WHERE s.environment_id = e.id) AS steps_total,
               (SELECT COUNT(*) FROM {d} d WHERE d.environment_id = e.id AND d.emergency
                AND d.reviewed_at IS NULL AND d.finished_at IS NOT NULL) AS reviews_due,
               (SELECT MIN(d.not_before) FROM {d} d WHERE d.environment_id = e.id
                AND d.status = %s AND d.not_before > %s) AS next_window,
               (SELECT SUM(c.amount_usd) FROM {cost} c WHERE c.environment_id = e.id
                AND c.day >= %s AND c.day <= %s) AS spend_total
        FROM {e} e JOIN {a} a ON a.id = e.application_id
        LEFT JOIN {drift} dr ON dr.environment_id = e.id
        WHERE e.id IN ({", ".join(["%s"] * count)})
    """


def card_environments(ids: list[int]) -> list[Environment]:
    """The environments `ids` (already checked against the user's roles),
    with what their cards need as attributes."""
    if not ids:
        return []
    # The month the figures run through (yesterday's, as on the cost page):
    # on the 1st, the month that just ended rather than an empty one.
    last = reporting_day()
    params = [status for status in LAST_STATUSES for _ in range(2)]
    now = connection.ops.adapt_datetimefield_value(timezone.now())  # SQLite: its own text
    params += [Status.RUNNING, Status.AWAITING_APPROVAL, Status.QUEUED, now,
               month_start(last), last, *ids]  # fmt: skip
    environments = list(Environment.objects.raw(_card_sql(len(ids)), params))
    for env in environments:
        env.application = Application(
            pk=env.application_id, slug=env.application_slug, name=env.application_name
        )
        if isinstance(env.drift_items, str):  # raw SQL hands JSON back as text
            env.drift_items = json.loads(env.drift_items)
        for name in ("drift_since", "next_window"):  # SQLite hands back UTC text
            if isinstance(getattr(env, name), str):
                setattr(env, name, datetime.fromisoformat(getattr(env, name)).replace(tzinfo=UTC))
        # SQLite sums decimals as floats; the cards compute with Decimal.
        env.spend_usd = None if env.spend_total is None else Decimal(str(env.spend_total))
    return environments


def _deployments(ids: set[int], current_ids: set[int], finished_ids: set[int]):
    """Summaries of the deployments the cards show, with approvers (of finished
    runs), images (of what runs now) and step runs: four queries."""
    rows = Deployment.objects.filter(pk__in=ids).values_list(
        "pk", "status", "release__version", "release_id", "finished_at",
        "cost_estimate__monthly_total_usd", "cost_estimate__recorded",
    )  # fmt: skip
    summaries = {row[0]: DeploymentSummary(*row) for row in rows}
    approvals = (
        Approval.objects.filter(deployment_id__in=finished_ids, decision=Decision.APPROVE)
        .order_by("created_at")
        .values_list("deployment_id", "user__username")
    )
    for deployment_id, username in approvals:
        summaries[deployment_id].approvers.append(username)
    releases = {summaries[pk].release_id for pk in current_ids if pk in summaries}
    images: dict[int, list[tuple[str, str]]] = {}
    artifacts = (
        Artifact.objects.filter(release_id__in=releases)
        .order_by("service__slug")
        .values_list("release_id", "service__slug", "image_ref")
    )
    for release_id, service, image_ref in artifacts:
        images.setdefault(release_id, []).append((service, image_ref))
    for pk in current_ids:
        if pk in summaries:
            summaries[pk].images = images.get(summaries[pk].release_id, [])
    steps = (
        StepRun.objects.filter(deployment_id__in=ids, phase="deploy")
        .order_by("deployment_id", "order")
        .values_list("deployment_id", "kind", "name", "status", "finished_at")
    )
    for deployment_id, *step in steps:
        summaries[deployment_id].steps.append(StepSummary(*step))
    return summaries


def _pending(environment_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """The newest few requests awaiting approval per environment (a window function)."""
    rows = (
        Deployment.objects.filter(
            environment_id__in=environment_ids, status=Status.AWAITING_APPROVAL
        )
        .annotate(
            position=Window(
                RowNumber(), partition_by=F("environment_id"), order_by=F("created_at").desc()
            )
        )
        .filter(position__lte=PENDING_SHOWN)
        .order_by("environment_id", "position")
        .values_list("environment_id", "pk", "release__version")
    )
    pending: dict[int, list[tuple[int, str]]] = {}
    for environment_id, pk, version in rows:
        pending.setdefault(environment_id, []).append((pk, version))
    return pending


def _alarms(environment_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    # No ordering: the model's default joins the environments for their order.
    rows = (
        Alarm.objects.filter(environment_id__in=environment_ids)
        .order_by()
        .values_list("environment_id", "name", "state")
    )
    alarms: dict[int, list[tuple[str, str]]] = {}
    for environment_id, name, state in rows:
        alarms.setdefault(environment_id, []).append((name, state))
    return alarms


# -- cards -------------------------------------------------------------------------


def _health(card: EnvironmentCard) -> None:
    """Health as the last http_check of a finished run found it."""
    finished = [d for d in (card.last, card.current) if d is not None]
    for deployment in sorted(finished, key=lambda d: d.finished_at, reverse=True):
        for step in deployment.steps:
            if step.kind == StepKind.HTTP_CHECK and step.status in (
                StepStatus.SUCCEEDED,
                StepStatus.FAILED,
            ):
                card.health = "healthy" if step.status == StepStatus.SUCCEEDED else "unhealthy"
                card.health_at = step.finished_at
                return


def _alarm_state(card: EnvironmentCard, alarms: list[tuple[str, str]]) -> None:
    if not alarms:
        if not card.environment.alarm_sources:
            card.alarm_state = NO_SOURCES
        elif card.environment.alarms_checked_at is None:
            card.alarm_state = AlarmState.UNKNOWN  # not polled yet, so not known
        else:
            # Read, and nothing to report: an Alertmanager lists only what fires.
            card.alarm_state = AlarmState.OK
        return
    worst = min((state for _, state in alarms), key=lambda state: ALARM_RANK.get(state, 1))
    card.alarm_state = worst
    card.alarm_count = len(alarms)
    card.alarm_names = sorted(name for name, state in alarms if state == worst)


def _progress(card: EnvironmentCard) -> None:
    runs = card.running.steps
    card.steps_done = sum(step.status != StepStatus.RUNNING for step in runs)
    current = [step.name for step in runs if step.status == StepStatus.RUNNING]
    card.current_step = current[-1] if current else ""


def _problems(card: EnvironmentCard) -> list[str]:
    problems = []
    if card.alarm_state == AlarmState.ALARM:
        problems.append("alarm")
    if card.last is not None and card.last.status == Status.FAILED:
        problems.append("failed")
    if card.environment.drift_state == DriftState.DRIFTED:
        problems.append("drifted")
    if card.running is not None:
        problems.append("running")
    if card.pending_count:
        problems.append("pending")
    if card.environment.reviews_due:  # emergency changes not yet reviewed
        problems.append("review due")
    budget = card.budget_usd
    if budget and max(card.spend_usd or 0, card.estimate_usd or 0) > budget:
        problems.append("over budget")
    if card.alarm_state == AlarmState.UNKNOWN:
        problems.append("alarms unknown")
    return problems


def _last_id(env: Environment) -> int | None:
    finished = [(getattr(env, f"last_{s}_at"), getattr(env, f"last_{s}_id")) for s in LAST_STATUSES]
    return max((f for f in finished if f[1] is not None), default=(None, None))[1]


def build_cards(environments: list[Environment]) -> list[EnvironmentCard]:
    """Cards for annotated environments (see card_environments), in a constant
    number of queries."""
    ids = [env.pk for env in environments]
    current_ids = {env.last_succeeded_id for env in environments} - {None}
    finished_ids = current_ids | {_last_id(env) for env in environments} - {None}
    wanted = finished_ids | {env.running_id for env in environments} - {None}
    deployments = _deployments(wanted, current_ids, finished_ids) if wanted else {}
    waiting = [env.pk for env in environments if env.pending_total]
    # One query even when nothing waits (then over all the cards, finding
    # nothing through the status index): the count never depends on the data.
    pending = _pending(waiting or ids) if ids else {}
    alarms = _alarms(ids) if ids else {}
    cards = []
    for env in environments:
        env.tier_colour = TIER_COLOURS.get(env.tier, "grey")
        card = EnvironmentCard(
            environment=env,
            current=deployments.get(env.last_succeeded_id),
            last=deployments.get(_last_id(env)),
            running=deployments.get(env.running_id),
            pending=pending.get(env.pk, []),
            pending_count=env.pending_total or 0,
            steps_total=env.steps_total or 0,
            spend_usd=env.spend_usd,
        )
        if card.running is not None:
            _progress(card)
        _health(card)
        _alarm_state(card, alarms.get(env.pk, []))
        card.problems = _problems(card)
        cards.append(card)
    return cards


def render_card(card: EnvironmentCard) -> SafeString:
    return render_to_string("portal/_environment_card.html", {"card": card})
