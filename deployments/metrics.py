"""DORA's four keys per application and environment, computed by the database.

Definitions (docs/ARCHITECTURE.md, "Delivery metrics"), over deployments that
finished inside the range:

- deployment frequency: succeeded deployments of kind `deploy` per bucket;
- lead time for changes: release registered → its first succeeded deployment
  in the environment (in production: the classic DORA lead time);
- change failure rate: deployments of kind `deploy` that failed, or that a
  rollback later undid (`rollback_of`), over those that failed or succeeded;
- time to restore: from a failure (a failed deployment's end, or the request
  of the rollback that undid a succeeded one) to the next succeeded
  deployment in that environment.

Each key is SQL grouped by (environment, day or week bucket): four statements
for any amount of history (time to restore takes two). Python only reshapes
the grouped rows (at most environments × buckets) into totals and charts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import (
    Avg,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Trunc
from django.utils import timezone

from deployments.choices import Kind, Status
from deployments.models import Deployment
from deployments.timeline import format_duration
from environments.models import Environment

RANGES = (7, 30, 90, 365)
DEFAULT_RANGE = 30


def bucket_kind(days: int) -> str:
    """Days for a week or a month; weeks beyond, so a year is 53 bars, not 365."""
    return "day" if days <= 30 else "week"


@dataclass
class EnvironmentKeys:
    """The four keys of one environment over the range."""

    environment: Environment
    deployments: int = 0
    changes: int = 0
    failures: int = 0
    lead_time: timedelta | None = None
    lead_time_releases: int = 0
    restore_time: timedelta | None = None
    restores: int = 0
    unrestored: int = 0
    days: int = DEFAULT_RANGE

    @property
    def per_week(self) -> float:
        return self.deployments * 7 / self.days

    @property
    def change_failure_rate(self) -> float | None:
        return self.failures / self.changes if self.changes else None

    @property
    def lead_time_text(self) -> str:
        return format_duration(self.lead_time)

    @property
    def restore_time_text(self) -> str:
        return format_duration(self.restore_time)


@dataclass
class DeliveryMetrics:
    """The keys per environment and per bucket, for the metrics page and its charts."""

    days: int
    since: datetime
    until: datetime
    bucket: str
    keys: dict[int, EnvironmentKeys]
    # {environment id: {bucket start: value}}
    frequency: dict[int, dict[datetime, int]] = field(default_factory=dict)
    failure_rate: dict[int, dict[datetime, float]] = field(default_factory=dict)
    lead_time_hours: dict[int, dict[datetime, float]] = field(default_factory=dict)
    restore_hours: dict[int, dict[datetime, float]] = field(default_factory=dict)


def _finished(environment_ids: list[int], since: datetime, until: datetime) -> QuerySet:
    return Deployment.objects.filter(
        environment_id__in=environment_ids, finished_at__gte=since, finished_at__lt=until
    ).order_by()


# Rollback requests that never ran (refused, left to expire, withdrawn):
# the deployment they would have undone was not a failed change.
REFUSED = (Status.REJECTED, Status.EXPIRED, Status.CANCELLED)


def _hours(span: timedelta | None) -> float | None:
    return None if span is None else span.total_seconds() / 3600


def _changes(
    environment_ids: list[int], since: datetime, until: datetime, bucket: str
) -> list[dict]:
    """Deployments, changes and failed changes per environment and bucket."""
    # Uncorrelated, so PostgreSQL hashes the undone ids once instead of probing per row.
    undone = (
        Deployment.objects.filter(kind=Kind.ROLLBACK, rollback_of__isnull=False)
        .exclude(status__in=REFUSED)
        .values("rollback_of_id")
    )
    return list(
        _finished(environment_ids, since, until)
        .filter(kind=Kind.DEPLOY, status__in=(Status.SUCCEEDED, Status.FAILED))
        .annotate(bucket=Trunc("finished_at", bucket))
        .values("environment_id", "bucket")
        .annotate(
            deployments=Count("pk", filter=Q(status=Status.SUCCEEDED)),
            changes=Count("pk"),
            failures=Count("pk", filter=Q(status=Status.FAILED) | Q(pk__in=undone)),
        )
    )


def _lead_times(
    environment_ids: list[int], since: datetime, until: datetime, bucket: str
) -> list[dict]:
    """Mean release-registered → first-success time per environment and bucket."""
    earlier_success = Deployment.objects.filter(
        environment_id=OuterRef("environment_id"),
        release_id=OuterRef("release_id"),
        status=Status.SUCCEEDED,
        finished_at__lt=OuterRef("finished_at"),
    )
    lead = ExpressionWrapper(F("finished_at") - F("release__created_at"), DurationField())
    return list(
        _finished(environment_ids, since, until)
        .filter(kind=Kind.DEPLOY, status=Status.SUCCEEDED)
        .filter(~Exists(earlier_success))
        .annotate(bucket=Trunc("finished_at", bucket), lead=lead)
        .values("environment_id", "bucket")
        .annotate(mean=Avg("lead"), releases=Count("pk"))
    )


def _restore_rows(incidents: QuerySet, bucket: str) -> list[dict]:
    """Incidents (annotated with `failed_at`) grouped by environment and bucket,
    each timed to the next succeeded deployment in its environment."""
    next_success = (
        Deployment.objects.filter(
            environment_id=OuterRef("environment_id"),
            status=Status.SUCCEEDED,
            finished_at__gt=OuterRef("failed_at"),
        )
        .order_by("finished_at")
        .values("finished_at")[:1]
    )
    return list(
        incidents.order_by()
        .annotate(restored_at=Subquery(next_success, output_field=DateTimeField()))
        .annotate(
            bucket=Trunc("failed_at", bucket),
            restore=ExpressionWrapper(F("restored_at") - F("failed_at"), DurationField()),
        )
        .values("environment_id", "bucket")
        .annotate(
            mean=Avg("restore"),
            restores=Count("pk", filter=Q(restored_at__isnull=False)),
            unrestored=Count("pk", filter=Q(restored_at__isnull=True)),
        )
    )


def _restores(
    environment_ids: list[int], since: datetime, until: datetime, bucket: str
) -> list[dict]:
    """Failure → next-success times per environment and bucket of the failure.

    Two statements, each selecting through an index by time (one OR of both
    made PostgreSQL scan every deployment): failed deployments that ended in
    the range, and the first rollbacks requested in the range of deployments
    that had succeeded (those failed when the rollback was asked for).
    """
    failed = Deployment.objects.filter(
        environment_id__in=environment_ids, kind=Kind.DEPLOY, status=Status.FAILED,
        finished_at__gte=since, finished_at__lt=until,
    ).annotate(failed_at=F("finished_at"))  # fmt: skip
    earlier_rollback = Deployment.objects.exclude(status__in=REFUSED).filter(
        kind=Kind.ROLLBACK,
        rollback_of_id=OuterRef("rollback_of_id"),
        created_at__lt=OuterRef("created_at"),
    )
    undone = (
        Deployment.objects.filter(
            environment_id__in=environment_ids, kind=Kind.ROLLBACK,
            created_at__gte=since, created_at__lt=until, rollback_of__kind=Kind.DEPLOY,
        )
        .exclude(rollback_of__status=Status.FAILED)  # already counted when it failed
        .exclude(status__in=REFUSED)
        .filter(~Exists(earlier_rollback))
        .annotate(failed_at=F("created_at"))
    )  # fmt: skip
    return _restore_rows(failed, bucket) + _restore_rows(undone, bucket)


def _weighted_mean(pairs: list[tuple[timedelta, int]]) -> timedelta | None:
    total = sum(count for _, count in pairs)
    if not total:
        return None
    return sum((mean * count for mean, count in pairs), timedelta()) / total


def delivery_metrics(
    environments: list[Environment], days: int, now: datetime | None = None
) -> DeliveryMetrics:
    """The four keys of these environments over the last `days` days."""
    until = now or timezone.now()
    since = until - timedelta(days=days)
    bucket = bucket_kind(days)
    ids = [e.pk for e in environments]
    keys = {e.pk: EnvironmentKeys(environment=e, days=days) for e in environments}
    result = DeliveryMetrics(days, since, until, bucket, keys)
    frequency, failure_rate = defaultdict(dict), defaultdict(dict)
    for row in _changes(ids, since, until, bucket):
        env = keys[row["environment_id"]]
        env.deployments += row["deployments"]
        env.changes += row["changes"]
        env.failures += row["failures"]
        frequency[env.environment.pk][row["bucket"]] = row["deployments"]
        failure_rate[env.environment.pk][row["bucket"]] = 100 * row["failures"] / row["changes"]
    lead_pairs, lead_hours = defaultdict(list), defaultdict(dict)
    for row in _lead_times(ids, since, until, bucket):
        lead_pairs[row["environment_id"]].append((row["mean"], row["releases"]))
        lead_hours[row["environment_id"]][row["bucket"]] = _hours(row["mean"])
    restore_pairs, restore_buckets = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for row in _restores(ids, since, until, bucket):
        env = keys[row["environment_id"]]
        env.unrestored += row["unrestored"]
        if row["restores"]:
            pair = (row["mean"], row["restores"])
            restore_pairs[row["environment_id"]].append(pair)
            restore_buckets[row["environment_id"]][row["bucket"]].append(pair)
    restore_hours = {
        pk: {start: _hours(_weighted_mean(pairs)) for start, pairs in buckets.items()}
        for pk, buckets in restore_buckets.items()
    }
    for pk, env in keys.items():
        env.lead_time = _weighted_mean(lead_pairs[pk])
        env.lead_time_releases = sum(count for _, count in lead_pairs[pk])
        env.restore_time = _weighted_mean(restore_pairs[pk])
        env.restores = sum(count for _, count in restore_pairs[pk])
    result.frequency, result.failure_rate = dict(frequency), dict(failure_rate)
    result.lead_time_hours, result.restore_hours = dict(lead_hours), restore_hours
    return result


# -- charts --------------------------------------------------------------------


def bucket_starts(result: DeliveryMetrics) -> list[datetime]:
    """Every bucket of the range, so a day without deployments shows as zero."""
    first = timezone.localtime(result.since).replace(hour=0, minute=0, second=0, microsecond=0)
    step = timedelta(days=1)
    if result.bucket == "week":
        first -= timedelta(days=first.weekday())  # date_trunc('week') starts on Monday
        step = timedelta(days=7)
    starts = []
    while first < result.until:
        starts.append(first)
        first += step
    return starts


def _figure(result: DeliveryMetrics, series: dict, title: str, unit: str, kind: str) -> dict:
    # Imported here: plotly's figure classes take a while to load and only this page needs them.
    import plotly.graph_objects as go

    starts = bucket_starts(result)
    figure = go.Figure()
    for pk, env in result.keys.items():
        values = series.get(pk, {})
        name = env.environment.name
        if kind == "bar":
            y = [values.get(start, 0) for start in starts]
            figure.add_bar(x=[s.isoformat() for s in starts], y=y, name=name)
        else:
            points = [(s.isoformat(), values[s]) for s in starts if s in values]
            figure.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=name,
                               mode="lines+markers")  # fmt: skip
    figure.update_layout(
        title=title, barmode="group", height=300, margin={"l": 50, "r": 10, "t": 40, "b": 40},
        yaxis={"title": unit, "rangemode": "tozero"}, legend={"orientation": "h"},
        # The whole range, always: a single point must not zoom the axis to milliseconds.
        xaxis={"type": "date", "range": [starts[0].isoformat(), result.until.isoformat()]},
    )  # fmt: skip
    return json.loads(figure.to_json())


def charts(result: DeliveryMetrics) -> list[dict]:
    """The four keys as plotly figures (JSON-ready), for static/js/charts.js."""
    per = result.bucket
    specs = [
        {"id": "chart-frequency", "figure": _figure(
            result, result.frequency, f"Deployment frequency (per {per})", "deployments", "bar")},
        {"id": "chart-lead-time", "figure": _figure(
            result, result.lead_time_hours, "Lead time for changes (mean)", "hours", "line")},
        {"id": "chart-failure-rate", "figure": _figure(
            result, result.failure_rate, "Change failure rate", "%", "bar")},
        {"id": "chart-restore", "figure": _figure(
            result, result.restore_hours, "Time to restore (mean)", "hours", "line")},
    ]  # fmt: skip
    for spec in specs:
        spec["data_id"] = spec["id"] + "-data"
    return specs
