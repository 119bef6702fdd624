"""What environments actually cost: daily spend from AWS Cost Explorer, the
month so far, a run-rate forecast, and budget alerts.

Cost Explorer reports spend grouped by a cost-allocation tag (`COST_TAG_KEY`,
"Environment" by default); an environment's tag value is its `cost_tag`, or
`<application>-<environment>`. One `get_cost_and_usage` call per AWS account
(environments sharing an `aws_role_arn`) covers all its environments: Cost
Explorer bills per request, not per environment.

Figures run through yesterday (UTC): today's spend is partial and would drag
the run-rate down. The forecast is linear: month-to-date ÷ days reported this
month × days in the month.

Budget alerts fire on *actual* month-to-date spend crossing 80 % and 100 % of
`monthly_budget_usd`, not on the forecast: early in a month the run-rate of a
few days swings widely, and an alert is sent only once a month, so a spike on
the 2nd would use it up. The forecast is part of every alert's text, and the
cost page shows it beside the budget for early warning.
"""

from __future__ import annotations

import calendar
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from environments.live import environment_changed
from environments.models import BudgetAlert, CostSnapshot, Environment
from portal.cloud.aws import AwsAccess, aws_call
from portal.cloud.errors import CloudError
from portal.core import audit
from portal.core.signals import announcement

log = logging.getLogger(__name__)

# Cost Explorer has one endpoint, in us-east-1, whatever the workload's region.
COST_EXPLORER_REGION = "us-east-1"
# Budget alerts go out as actual spend reaches these percentages of the budget;
# the cost page marks a month "near" its budget at the first and "over" at the last.
BUDGET_THRESHOLDS = (80, 100)
CENT = Decimal("0.01")
SNAPSHOT_PRECISION = Decimal("0.0001")


def tag_value(environment: Environment) -> str:
    """The cost-allocation tag value that marks this environment's resources."""
    return environment.cost_tag or f"{environment.application.slug}-{environment.slug}"


def month_start(day: date) -> date:
    return day.replace(day=1)


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def reporting_day(today: date | None = None) -> date:
    """The last complete day: the one the figures run through."""
    return (today or timezone.now().date()) - timedelta(days=1)


# -- reading Cost Explorer --------------------------------------------------------


def daily_costs_by_tag(role_arn: str, start: date, end: date) -> dict[str, dict[date, tuple]]:
    """{tag value: {day: (amount, estimated)}} for one account, from `start`
    up to (excluding) `end`. Raises CloudError with a readable message, or
    boto's own errors when the role cannot be assumed."""
    ce = AwsAccess(region=COST_EXPLORER_REGION, role_arn=role_arn, session_name="gantry-costs")
    client = ce.client("ce")
    key = settings.COST_TAG_KEY
    request = {
        "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
        "GroupBy": [{"Type": "TAG", "Key": key}],
    }
    costs: dict[str, dict[date, tuple]] = defaultdict(dict)
    while True:
        page = aws_call("Reading Cost Explorer", client.get_cost_and_usage, **request)
        for period in page.get("ResultsByTime", []):
            day = date.fromisoformat(period["TimePeriod"]["Start"])
            for group in period.get("Groups", []):
                # Keys look like "Environment$fraud-detector-production";
                # "Environment$" alone is spend without the tag.
                tag = group["Keys"][0].removeprefix(f"{key}$")
                amount = Decimal(group["Metrics"]["UnblendedCost"]["Amount"])
                if tag:
                    costs[tag][day] = (amount, bool(period.get("Estimated")))
        token = page.get("NextPageToken")
        if not token:
            return costs
        request["NextPageToken"] = token


def store_snapshots(environment: Environment, daily: dict[date, tuple]) -> int:
    """Upsert one environment's days; returns how many rows were new or changed."""
    existing = {
        row.day: (row.amount_usd, row.estimated)
        for row in CostSnapshot.objects.filter(environment=environment, day__in=list(daily))
    }
    now = timezone.now()
    changed = []
    for day, (amount, estimated) in daily.items():
        amount = amount.quantize(SNAPSHOT_PRECISION)
        if existing.get(day) != (amount, estimated):
            changed.append(
                CostSnapshot(environment=environment, day=day, amount_usd=amount,
                             estimated=estimated, fetched_at=now)
            )  # fmt: skip
    # The unique (environment, day) constraint settles two fetches racing.
    CostSnapshot.objects.bulk_create(
        changed,
        update_conflicts=True,
        unique_fields=["environment", "day"],
        update_fields=["amount_usd", "estimated", "fetched_at"],
    )
    return len(changed)


def fetch_costs(days: int | None = None, today: date | None = None) -> dict:
    """RQ job (daily): fetch, store, check budgets. Safe to run twice: rows are
    upserted and each budget alert exists once.

    Without `days` it reads from the first of last month, so the month so far
    is complete and Cost Explorer's restated last days are refreshed.
    """
    today = today or timezone.now().date()
    start = today - timedelta(days=days) if days else month_start(month_start(today) - timedelta(1))
    environments = Environment.objects.select_related("application").order_by("pk")
    by_account: dict[str, list[Environment]] = defaultdict(list)
    for environment in environments:
        by_account[environment.aws_role_arn].append(environment)
    failed: list[str] = []
    stored: dict[Environment, int] = {}  # fetched environment: rows new or changed
    for role_arn, members in by_account.items():
        try:
            costs = daily_costs_by_tag(role_arn, start, today)
        except (CloudError, ClientError, BotoCoreError) as exc:
            # One unreachable account (or a role we may not assume) must not
            # hide the others' figures.
            log.warning("costs for account %s: %s", role_arn or "(default)", exc)
            failed.append(role_arn or "default")
            continue
        claimed: set[str] = set()
        for environment in members:
            tag = tag_value(environment)
            if tag in claimed:
                log.warning("cost tag %r is used by more than one environment", tag)
                continue
            claimed.add(tag)
            stored[environment] = store_snapshots(environment, costs.get(tag, {}))
    alerts = check_budgets(stored, today)
    alerted = {alert.environment_id for alert in alerts}
    for environment, changed in stored.items():
        if changed or environment.pk in alerted:
            environment_changed(environment.pk, "costs")
    return {"snapshots": sum(stored.values()), "alerts": len(alerts), "failed_accounts": failed}


# -- month to date, forecast, budget ------------------------------------------------


@dataclass
class MonthToDate:
    """One environment's spend in the reporting month, and where it is heading."""

    month: date
    spent_usd: Decimal
    last_day: date | None
    budget_usd: Decimal | None

    @property
    def days_reported(self) -> int:
        return (self.last_day - self.month).days + 1 if self.last_day else 0

    @property
    def forecast_usd(self) -> Decimal | None:
        if not self.days_reported:
            return None
        rate = self.spent_usd / self.days_reported
        return (rate * days_in_month(self.month)).quantize(CENT)

    @property
    def budget_used_percent(self) -> Decimal | None:
        if not self.budget_usd:
            return None
        return (self.spent_usd * 100 / self.budget_usd).quantize(Decimal("0.1"))

    def reached(self, threshold: int) -> bool:
        """Whether actual spend has reached `threshold` percent of the budget."""
        return bool(self.budget_usd) and self.spent_usd * 100 >= self.budget_usd * threshold

    @property
    def budget_mark(self) -> str:
        """How the cost page marks the share of the budget used: "over", "near" or ""."""
        if self.reached(BUDGET_THRESHOLDS[-1]):
            return "over"
        return "near" if self.reached(BUDGET_THRESHOLDS[0]) else ""


def month_to_date(environments: Iterable[Environment], today: date | None = None) -> dict:
    """{environment id: MonthToDate} with one aggregate query."""
    environments = list(environments)
    first = month_start(reporting_day(today))
    after = first + timedelta(days=days_in_month(first))
    totals = {
        row["environment_id"]: row
        for row in CostSnapshot.objects.filter(
            environment__in=[e.pk for e in environments], day__gte=first, day__lt=after
        )
        .values("environment_id")
        .annotate(spent=Sum("amount_usd"), last_day=Max("day"))
    }
    figures = {}
    for environment in environments:
        row = totals.get(environment.pk, {})
        figures[environment.pk] = MonthToDate(
            month=first,
            spent_usd=(row.get("spent") or Decimal(0)).quantize(CENT),
            last_day=row.get("last_day"),
            budget_usd=environment.monthly_budget_usd,
        )
    return figures


def check_budgets(
    environments: Iterable[Environment], today: date | None = None
) -> list[BudgetAlert]:
    """Record and announce each threshold the month's actual spend has crossed
    for the first time in these environments; returns the alerts created now.

    One aggregate query for all of them, and one for the alerts already sent
    this month when any threshold is reached: the daily job checks every
    environment, and most have crossed nothing new.
    """
    budgeted = [e for e in environments if e.monthly_budget_usd]
    if not budgeted:
        return []  # nothing to alert on: spare the month's aggregate query
    figures = month_to_date(budgeted, today)
    crossed = [
        (environment, threshold)
        for environment in budgeted
        for threshold in BUDGET_THRESHOLDS
        if figures[environment.pk].reached(threshold)
    ]
    if not crossed:
        return []
    sent = set(
        BudgetAlert.objects.filter(
            environment__in={environment.pk for environment, _ in crossed},
            month=figures[crossed[0][0].pk].month,
        ).values_list("environment_id", "threshold_percent")
    )
    created = []
    for environment, threshold in crossed:
        if (environment.pk, threshold) in sent:
            continue
        alert = _send_budget_alert(environment, figures[environment.pk], threshold)
        if alert is not None:
            created.append(alert)
    return created


def _send_budget_alert(
    environment: Environment, figures: MonthToDate, threshold: int
) -> BudgetAlert | None:
    """Record, announce and audit one crossed threshold; None if another fetch did first."""
    with transaction.atomic():
        try:
            # The unique (environment, month, threshold) constraint decides
            # who sends it when two fetches race; the loser sends nothing.
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    environment=environment,
                    month=figures.month,
                    threshold_percent=threshold,
                    spent_usd=figures.spent_usd,
                    forecast_usd=figures.forecast_usd or figures.spent_usd,
                    budget_usd=figures.budget_usd,
                )
        except IntegrityError:
            return None
        subject, body = budget_message(environment, figures, threshold)
        announcement.send(
            __name__, environment=environment, event="budget", subject=subject, body=body
        )
        audit.record(
            "budget.threshold_crossed",
            alert,
            environment=environment,
            after={
                "month": figures.month.isoformat(),
                "threshold_percent": threshold,
                "spent_usd": str(figures.spent_usd),
                "forecast_usd": str(alert.forecast_usd),
                "budget_usd": str(figures.budget_usd),
            },
        )
    return alert


def budget_message(environment: Environment, figures: MonthToDate, threshold: int) -> tuple:
    name = f"{environment.application.slug}/{environment.slug}"
    month = f"{figures.month:%B %Y}"
    subject = f"Budget {threshold}% reached: {name} spent ${figures.spent_usd} in {month}"
    forecast = f"${figures.forecast_usd}" if figures.forecast_usd is not None else "unknown"
    body = (
        f"{subject}\n"
        f"Budget ${figures.budget_usd}/month; spent ${figures.spent_usd} through "
        f"{figures.last_day:%Y-%m-%d} ({figures.budget_used_percent}%).\n"
        f"Forecast at the current run-rate: {forecast}.\n"
    )
    return subject, body


# -- the cost page --------------------------------------------------------------------

CHART_LAYOUT = {
    "template": "plotly_white",
    "height": 340,
    "margin": {"l": 60, "r": 20, "t": 20, "b": 40},
    "legend": {"orientation": "h", "y": -0.18},
    "yaxis": {"title": {"text": "USD"}, "tickprefix": "$"},
}
BIGGEST_RESOURCES = 10


@dataclass
class EnvironmentCosts:
    """One row of the cost page: an environment's month and its estimate."""

    environment: Environment
    month: MonthToDate
    # The cost estimate of what runs there now (a deployment's CostEstimate),
    # which the caller brings: the catalog does not know deployments.
    estimate: Any
    alerts: list[BudgetAlert]

    @property
    def drift_percent(self) -> Decimal | None:
        """How far the run-rate is from the estimate of what runs now."""
        forecast = self.month.forecast_usd
        if self.estimate is None or forecast is None or not self.estimate.monthly_total_usd:
            return None
        change = (forecast - self.estimate.monthly_total_usd) * 100
        return (change / self.estimate.monthly_total_usd).quantize(Decimal("0.1"))


def _figure(traces: list, **layout) -> dict:
    """A plotly figure as plain JSON data, for `json_script` and Plotly.newPlot."""
    import plotly.graph_objects as go

    figure = go.Figure(data=traces, layout={**CHART_LAYOUT, **layout})
    return json.loads(figure.to_json())


def cost_report(
    environments: list[Environment], days: int, estimates: dict, today: date | None = None
) -> dict:
    """Rows and chart figures for the cost page of these (visible) environments;
    `estimates`: {environment id: the cost estimate of what runs there now}."""
    # Imported here: plotly takes a second to import, and the cost job and the
    # API, which import this module too, draw nothing.
    import plotly.graph_objects as go

    today = today or timezone.now().date()
    months = month_to_date(environments, today)
    alerts = defaultdict(list)
    first = month_start(reporting_day(today))
    this_month = BudgetAlert.objects.filter(environment__in=environments, month=first)
    for alert in this_month.order_by("threshold_percent"):
        alert.colour = "red" if alert.threshold_percent >= BUDGET_THRESHOLDS[-1] else "amber"
        alerts[alert.environment_id].append(alert)
    rows = [
        EnvironmentCosts(e, months[e.pk], estimates.get(e.pk), alerts[e.pk]) for e in environments
    ]
    snapshots = CostSnapshot.objects.filter(
        environment__in=environments, day__gte=today - timedelta(days=days), day__lt=today
    ).order_by("day")
    daily = defaultdict(list)
    for snapshot in snapshots:
        daily[snapshot.environment_id].append(snapshot)
    charts = {"daily": None, "budget": None, "drift": None, "resources": None}
    if daily:
        charts["daily"] = _figure(
            [
                go.Bar(
                    name=e.name,
                    x=[s.day.isoformat() for s in daily[e.pk]],
                    y=[float(s.amount_usd) for s in daily[e.pk]],
                    # Hatched: Cost Explorer's figure is still an estimate.
                    marker_pattern_shape=["/" if s.estimated else "" for s in daily[e.pk]],
                )
                for e in environments
                if daily[e.pk]
            ],
            barmode="stack",
        )
    with_month = [r for r in rows if r.month.days_reported or r.month.budget_usd]
    if any(r.month.days_reported for r in rows):
        names = [r.environment.name for r in with_month]
        charts["budget"] = _figure(
            [
                go.Bar(name="Month to date", x=names,
                       y=[float(r.month.spent_usd) for r in with_month]),
                go.Bar(name="Forecast (run-rate)", x=names, opacity=0.45,
                       y=[_number(r.month.forecast_usd) for r in with_month]),
                go.Scatter(name="Budget", x=names, mode="markers",
                           y=[_number(r.month.budget_usd) for r in with_month],
                           marker={"symbol": "line-ew-open", "size": 44,
                                   "line": {"width": 3, "color": "#b42318"}}),
            ],
            barmode="group",
        )  # fmt: skip
    drifting = [r for r in rows if r.drift_percent is not None]
    if drifting:
        names = [r.environment.name + (" (recorded)" if r.estimate.recorded else "")
                 for r in drifting]  # fmt: skip
        charts["drift"] = _figure(
            [
                go.Bar(name="Estimate of what runs now", x=names,
                       y=[float(r.estimate.monthly_total_usd) for r in drifting]),
                go.Bar(name="Forecast from actual spend", x=names,
                       y=[float(r.month.forecast_usd) for r in drifting],
                       text=[f"{r.drift_percent:+}%" for r in drifting], textposition="outside"),
            ],
            barmode="group",
        )  # fmt: skip
    resources = biggest_resources(rows)
    if resources:
        charts["resources"] = _figure(
            [
                go.Bar(
                    orientation="h",
                    x=[item["monthly_usd"] for item in resources],
                    y=[item["label"] for item in resources],
                    showlegend=False,
                )
            ],
            xaxis={"title": {"text": "USD per month (estimate)"}, "tickprefix": "$"},
            yaxis={"autorange": "reversed", "automargin": True},
        )
    panels = [
        CostChart("daily", "Daily spend per environment", charts["daily"],
                  f"No spend reported in the last {days} days."),
        CostChart("budget", "Month to date vs budget", charts["budget"],
                  "No spend reported this month yet."),
        CostChart("drift", "Estimate vs actual", charts["drift"],
                  "Needs spend this month and a cost estimate of what runs now "
                  "(the plan of the last succeeded deployment)."),
        CostChart("resources", "Biggest resources (estimate of what runs now)",
                  charts["resources"], "No priced resources in the estimates of what runs now."),
    ]  # fmt: skip
    return {
        "rows": rows,
        "charts": panels,
        "month": first,
        "budget_thresholds": BUDGET_THRESHOLDS,
    }


@dataclass
class CostChart:
    """One chart panel of the cost page; `figure` None shows `empty` instead."""

    name: str
    title: str
    figure: dict | None
    empty: str

    @property
    def data_id(self) -> str:
        return f"cost-{self.name}-figure"


def _number(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def biggest_resources(rows: list[EnvironmentCosts]) -> list[dict]:
    """The costliest resources in the estimates of what runs now, across environments."""
    items = []
    for row in rows:
        for resource in row.estimate.resources if row.estimate else []:
            monthly = resource.get("monthly_usd")
            if isinstance(monthly, int | float | str) and float(monthly) > 0:
                label = f"{row.environment.name}: {resource.get('address', '?')}"
                if row.estimate.recorded:
                    label += " (recorded)"
                items.append({"label": label, "monthly_usd": round(float(monthly), 2)})
    items.sort(key=lambda item: item["monthly_usd"], reverse=True)
    return items[:BIGGEST_RESOURCES]
