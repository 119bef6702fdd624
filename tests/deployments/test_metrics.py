"""deployments.metrics: DORA's four keys from a constructed history with known answers.

NOW is fixed; every deployment is placed at a known time before it:

production                                     staging
  NOW-40d  1.2.0 succeeded (outside 30 days)     NOW-9.5d 1.3.0 succeeded (12 h lead)
  NOW-9d   1.3.0 succeeded        lead 24 h      NOW-3d   1.4.0 cancelled (not a change)
  NOW-4d   1.4.0 failed           restore 2 h →
  NOW-4d+2h 1.4.0 succeeded       lead 26 h
  NOW-1d   1.5.0 succeeded        lead 24 h, later rolled back
  NOW-1d+1h rollback requested    restore 30 min →
  NOW-1d+1h30 rollback to 1.4.0 succeeded
  NOW-12h  1.3.0 succeeded again  (redeploy: no new lead time)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.choices import Kind, Status
from deployments.metrics import bucket_starts, charts, delivery_metrics
from deployments.models import Deployment, Release
from tests.conftest import env, image

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def register(catalog, users, version: str, registered: datetime) -> Release:
    release = Release.register(catalog, version, {s: image(s) for s in SERVICES}, users["alice"])
    # Test setup: releases are immutable through save(); the registration time is placed.
    Release.objects.filter(pk=release.pk).update(created_at=registered)
    return release


def ran(release, environment, status, finished, kind=Kind.DEPLOY, created=None, undo=None):
    """A deployment as the engine leaves it, at a known time."""
    return Deployment.objects.create(
        release=release, environment=environment, kind=kind, status=status, reason="history",
        created_at=created or finished - 10 * timedelta(minutes=1), finished_at=finished,
        rollback_of=undo,
    )  # fmt: skip


@pytest.fixture
def history(catalog, users) -> dict:
    production, staging = env(catalog, "production"), env(catalog, "staging")
    r12 = register(catalog, users, "1.2.0", NOW - 45 * DAY)
    r13 = register(catalog, users, "1.3.0", NOW - 10 * DAY)
    r14 = register(catalog, users, "1.4.0", NOW - 5 * DAY)
    r15 = register(catalog, users, "1.5.0", NOW - 2 * DAY)
    ran(r12, production, Status.SUCCEEDED, NOW - 40 * DAY)
    ran(r13, production, Status.SUCCEEDED, NOW - 9 * DAY)
    ran(r14, production, Status.FAILED, NOW - 4 * DAY)
    ran(r14, production, Status.SUCCEEDED, NOW - 4 * DAY + 2 * HOUR)
    d15 = ran(r15, production, Status.SUCCEEDED, NOW - DAY)
    ran(r14, production, Status.SUCCEEDED, NOW - DAY + 90 * timedelta(minutes=1),
        kind=Kind.ROLLBACK, created=NOW - DAY + HOUR, undo=d15)  # fmt: skip
    ran(r13, production, Status.SUCCEEDED, NOW - 12 * HOUR)
    ran(r13, staging, Status.SUCCEEDED, NOW - 9 * DAY - 12 * HOUR)
    ran(r14, staging, Status.CANCELLED, NOW - 3 * DAY)
    return {"production": production, "staging": staging, "dev": env(catalog, "dev")}


def keys(history, days: int) -> dict:
    environments = [history["dev"], history["staging"], history["production"]]
    return {e.environment.slug: e for e in delivery_metrics(environments, days, NOW).keys.values()}


def test_deployment_frequency_counts_succeeded_deploys_in_range(history):
    production = keys(history, 30)["production"]
    assert production.deployments == 4  # not the rollback, not the one 40 days ago
    assert production.per_week == pytest.approx(4 * 7 / 30)
    assert keys(history, 30)["staging"].deployments == 1
    assert keys(history, 365)["production"].deployments == 5


def test_lead_time_runs_from_registration_to_first_success(history):
    production = keys(history, 30)["production"]
    # 24 h (1.3.0), 26 h (1.4.0), 24 h (1.5.0); the 1.3.0 redeploy adds nothing.
    assert production.lead_time == timedelta(hours=74) / 3
    assert production.lead_time_releases == 3
    assert keys(history, 30)["staging"].lead_time == timedelta(hours=12)


def test_change_failure_rate_counts_failures_and_rollbacks(history):
    production = keys(history, 30)["production"]
    # 5 changes (4 succeeded + 1 failed); the failed one and the rolled-back 1.5.0 failed.
    assert (production.failures, production.changes) == (2, 5)
    assert production.change_failure_rate == pytest.approx(0.4)
    staging = keys(history, 30)["staging"]
    assert (staging.failures, staging.changes, staging.change_failure_rate) == (0, 1, 0.0)


def test_a_rollback_request_that_never_ran_is_no_failure(history, catalog):
    """Staging's 1.3.0 had a rollback requested that was rejected, another
    left to expire: nothing was undone, so no failed change, no incident."""
    staging_13 = Deployment.objects.get(environment=history["staging"], status=Status.SUCCEEDED)
    for status, hours in ((Status.REJECTED, 2), (Status.EXPIRED, 3)):
        ran(Release.objects.get(version="1.2.0"), history["staging"], status,
            NOW - 9 * DAY + hours * HOUR, kind=Kind.ROLLBACK,
            created=NOW - 9 * DAY + hours * HOUR, undo=staging_13)  # fmt: skip
    staging = keys(history, 30)["staging"]
    assert (staging.failures, staging.changes) == (0, 1)
    assert staging.restore_time is None and staging.unrestored == 0


def test_time_to_restore_runs_to_the_next_success(history):
    production = keys(history, 30)["production"]
    # 2 h after the failure; 30 min from the rollback request to the rollback's success.
    assert production.restore_time == timedelta(minutes=75)
    assert (production.restores, production.unrestored) == (2, 0)
    assert keys(history, 30)["staging"].restore_time is None


def test_an_unrestored_failure_is_counted_apart(history, catalog):
    ran(Release.objects.get(version="1.5.0"), history["production"], Status.FAILED, NOW - HOUR)
    production = keys(history, 30)["production"]
    assert production.unrestored == 1
    assert production.restore_time == timedelta(minutes=75)


def test_the_range_selects_what_finished_inside_it(history):
    production = keys(history, 7)["production"]
    assert production.deployments == 3
    assert (production.failures, production.changes) == (2, 4)
    assert production.lead_time == timedelta(hours=25)
    assert production.restore_time == timedelta(minutes=75)
    staging = keys(history, 7)["staging"]
    assert (staging.deployments, staging.lead_time, staging.changes) == (0, None, 0)


def test_it_buckets_by_day_up_to_a_month_and_by_week_beyond(history):
    production = history["production"]
    month = delivery_metrics([production], 30, NOW)
    assert month.bucket == "day"
    day_of_failure = datetime(2026, 11, 26, tzinfo=UTC)
    assert month.frequency[production.pk][day_of_failure] == 1
    assert month.failure_rate[production.pk][day_of_failure] == 50.0
    assert sum(month.frequency[production.pk].values()) == 4
    assert len(bucket_starts(month)) == 31
    year = delivery_metrics([production], 365, NOW)
    assert year.bucket == "week"
    assert all(start.weekday() == 0 for start in year.frequency[production.pk])
    assert sum(year.frequency[production.pk].values()) == 5


def test_it_reads_only_the_environments_it_is_given(history):
    only = delivery_metrics([history["staging"]], 30, NOW)
    assert list(only.keys) == [history["staging"].pk]
    assert only.keys[history["staging"].pk].deployments == 1


def test_it_is_four_aggregate_queries_however_long_the_history(history, catalog):
    environments = [history["staging"], history["production"]]
    with CaptureQueriesContext(connection) as small:
        delivery_metrics(environments, 30, NOW)
    r15 = Release.objects.get(version="1.5.0")
    for n in range(200):
        status = Status.FAILED if n % 5 == 0 else Status.SUCCEEDED
        ran(r15, history["production"], status, NOW - 20 * DAY + n * HOUR)
    with CaptureQueriesContext(connection) as large:
        result = delivery_metrics(environments, 30, NOW)
    assert len(small) == len(large) == 4
    assert all("GROUP BY" in query["sql"] for query in large.captured_queries)
    assert result.keys[history["production"].pk].deployments == 4 + 160


def test_charts_are_plotly_figures_of_the_four_keys(history):
    result = delivery_metrics([history["staging"], history["production"]], 30, NOW)
    with CaptureQueriesContext(connection) as queries:
        specs = charts(result)
    assert len(queries) == 0
    assert [s["id"] for s in specs] == [
        "chart-frequency", "chart-lead-time", "chart-failure-rate", "chart-restore"
    ]  # fmt: skip
    frequency = specs[0]["figure"]
    assert [trace["name"] for trace in frequency["data"]] == ["Staging", "Production"]
    assert sum(frequency["data"][1]["y"]) == 4
    assert len(frequency["data"][1]["x"]) == 31
    lead = specs[1]["figure"]["data"][1]
    assert lead["type"] == "scatter"
    assert sorted(lead["y"]) == [24.0, 24.0, 26.0]
