"""The daily cost job against a real moto server's Cost Explorer: snapshots,
month to date, run-rate forecast and budget alerts (seed 002's fraud-detector:
~$185/month in production, ~$50 in dev)."""

from __future__ import annotations

import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
import requests
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.utils import timezone
from moto.ce.models import ce_backends
from rq.cron import CronScheduler

from deployments import sandbox
from deployments.choices import Channel, NotificationEvent, Status
from deployments.models import (
    CostEstimate,
    Deployment,
    Notification,
    current_estimates,
    with_current_deployment,
)
from environments.costs import (
    check_budgets,
    fetch_costs,
    month_to_date,
    tag_value,
)
from environments.models import BudgetAlert, CostSnapshot, Environment
from portal.core.audit_chain import verify_chain
from portal.core.models import AuditEvent
from tests.conftest import env
from tests.live import broadcast_heard
from tests.runners.conftest import moto_endpoint  # noqa: F401 (a fixture)

TODAY = date(2026, 11, 16)  # figures run through the 15th
DAILY = {"fraud-detector-production": "6.1000", "fraud-detector-dev": "1.6500"}


@pytest.fixture
def cost_explorer(moto_endpoint, monkeypatch):  # noqa: F811
    """moto's Cost Explorer with an empty answer queue, reached as AWS would be."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # Answers are queued per server process and remembered per request body;
    # start each test from none.
    ce_backends.reset()
    return moto_endpoint


def queue_answer(endpoint: str, daily: dict[str, str], days: int = 30, until: date = TODAY,
                 extra_groups: tuple = (), account_id: str = "123456789012") -> None:  # fmt: skip
    """Queue one Cost Explorer answer in an account: `days` days up to `until`
    (excluded), the same amount each day per tag value, the last two estimated."""
    periods = []
    for back in range(days, 0, -1):
        day = until - timedelta(days=back)
        groups = [
            {"Keys": [f"Environment${tag}"],
             "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}
            for tag, amount in daily.items()
        ] + list(extra_groups)  # fmt: skip
        periods.append({"TimePeriod": {"Start": str(day), "End": str(day + timedelta(1))},
                        "Total": {}, "Groups": groups, "Estimated": back <= 2})  # fmt: skip
    response = requests.post(
        f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
        json={"results": [{"ResultsByTime": periods}], "account_id": account_id},
        timeout=10,
    )
    assert response.status_code == 201


def test_it_stores_a_snapshot_per_environment_and_day(cost_explorer, catalog):
    queue_answer(cost_explorer, DAILY)
    summary = fetch_costs(today=TODAY)
    production, dev = env(catalog, "production"), env(catalog, "dev")
    assert summary == {"snapshots": 60, "alerts": 0, "failed_accounts": []}
    assert production.cost_snapshots.count() == 30
    latest = production.cost_snapshots.first()
    assert (latest.day, latest.amount_usd, latest.estimated) == (
        date(2026, 11, 15), Decimal("6.1000"), True,
    )  # fmt: skip
    assert production.cost_snapshots.get(day=date(2026, 11, 13)).estimated is False
    assert dev.cost_snapshots.filter(amount_usd=Decimal("1.65")).count() == 30
    # No spend reported for staging: no rows, not zeros.
    assert not env(catalog, "staging").cost_snapshots.exists()


def test_it_is_safe_to_run_twice(cost_explorer, catalog):
    queue_answer(cost_explorer, DAILY)
    fetch_costs(today=TODAY)
    first = list(CostSnapshot.objects.values_list("pk", "amount_usd", "fetched_at"))
    # The same request again: moto answers as before; nothing is new.
    assert fetch_costs(today=TODAY)["snapshots"] == 0
    assert list(CostSnapshot.objects.values_list("pk", "amount_usd", "fetched_at")) == first


def test_it_updates_days_cost_explorer_restates(cost_explorer, catalog):
    queue_answer(cost_explorer, DAILY)
    fetch_costs(today=TODAY)
    # A day later the estimated 14th has settled at a different figure.
    queue_answer(cost_explorer, {"fraud-detector-production": "7.2500"}, days=3,
                 until=TODAY + timedelta(1))  # fmt: skip
    assert fetch_costs(days=3, today=TODAY + timedelta(1))["snapshots"] == 3
    production = env(catalog, "production")
    settled = production.cost_snapshots.get(day=date(2026, 11, 14))
    assert (settled.amount_usd, settled.estimated) == (Decimal("7.2500"), False)
    assert production.cost_snapshots.count() == 31


def test_it_computes_month_to_date_and_the_run_rate_forecast(cost_explorer, catalog):
    queue_answer(cost_explorer, DAILY)
    fetch_costs(today=TODAY)
    production = env(catalog, "production")
    production.monthly_budget_usd = Decimal("185")
    figures = month_to_date([production], TODAY)[production.pk]
    # November 1-15: 15 × $6.10; the run-rate over 30 days ≈ seed 002's $185.
    assert figures.month == date(2026, 11, 1)
    assert figures.spent_usd == Decimal("91.50")
    assert figures.days_reported == 15
    assert figures.forecast_usd == Decimal("183.00")
    assert figures.budget_used_percent == Decimal("49.5")


def test_it_alerts_at_80_and_100_percent_once_each(cost_explorer, catalog, users):
    production = env(catalog, "production")
    production.monthly_budget_usd = Decimal("90")  # $91.50 spent by the 15th
    production.save()
    staging = env(catalog, "staging")
    staging.monthly_budget_usd = Decimal("200")
    staging.save()
    queue_answer(cost_explorer, {**DAILY, "fraud-detector-staging": "1.8000"})

    assert fetch_costs(today=TODAY)["alerts"] == 2
    assert fetch_costs(today=TODAY)["alerts"] == 0

    alerts = BudgetAlert.objects.order_by("threshold_percent")
    assert [(a.environment_id, a.threshold_percent) for a in alerts] == [
        (production.pk, 80), (production.pk, 100),
    ]  # fmt: skip
    assert alerts[0].month == date(2026, 11, 1)
    assert (alerts[0].spent_usd, alerts[0].forecast_usd) == (Decimal("91.50"), Decimal("183.00"))
    notifications = Notification.objects.filter(event=NotificationEvent.BUDGET)
    assert notifications.count() == 2
    email = notifications.get(subject__contains="100%")
    assert email.environment_id == production.pk and email.channel == Channel.EMAIL
    # Approvers and admins of production hear of it; the deployer and viewer don't.
    assert email.recipients == ["bob@example.com", "carol@example.com", "erin@example.com"]
    assert "spent $91.50 in November 2026" in email.subject
    assert "Forecast at the current run-rate: $183.00" in email.body
    events = AuditEvent.objects.filter(action="budget.threshold_crossed").order_by("seq")
    assert [e.after["threshold_percent"] for e in events] == [80, 100]
    assert events[0].environment_id == production.pk and events[0].actor_name == "system"
    assert verify_chain().ok


def test_the_estimate_of_what_runs_now_is_that_of_the_current_deployment(catalog, release, users):
    now = timezone.now()

    def succeeded(environment, finished_at, monthly: str | None) -> Deployment:
        deployment = Deployment.objects.create(
            release=release, environment=environment, reason="go", status=Status.SUCCEEDED,
            requested_by=users["alice"], finished_at=finished_at,
        )  # fmt: skip
        if monthly is not None:
            CostEstimate.objects.create(
                deployment=deployment, region="ca-central-1", monthly_total_usd=Decimal(monthly),
                previous_monthly_usd=Decimal(0), catalog_version="test",
            )  # fmt: skip
        return deployment

    dev, staging, production = (env(catalog, slug) for slug in ("dev", "staging", "production"))
    succeeded(dev, None, "10.00")  # no finish time: never "latest" before one that has one
    succeeded(dev, now - timedelta(days=2), "20.00")
    current = succeeded(dev, now - timedelta(days=1), "30.00")
    succeeded(staging, now - timedelta(days=2), "40.00")
    succeeded(staging, now - timedelta(days=1), None)  # what runs now has no estimate

    estimates = current_estimates([dev.pk, staging.pk, production.pk])
    assert {pk: e.monthly_total_usd for pk, e in estimates.items()} == {dev.pk: Decimal("30.00")}
    # The same rule as the pages' "what runs now".
    running = with_current_deployment(Environment.objects.filter(pk=dev.pk)).get()
    assert running.current_deployment_id == current.pk == estimates[dev.pk].deployment_id


def test_it_checks_the_budgets_of_all_environments_in_one_query(catalog, django_assert_num_queries):
    environments = list(catalog.environments.select_related("application").order_by("order"))
    for environment in environments:
        # $6.10 a day, November 1-15: $91.50 of a $200 budget.
        days = [date(2026, 11, day) for day in range(1, 16)]
        CostSnapshot.objects.bulk_create(
            CostSnapshot(environment=environment, day=day, amount_usd=Decimal("6.1"))
            for day in days
        )
        environment.monthly_budget_usd = Decimal("200")
    with django_assert_num_queries(1):
        assert check_budgets(environments, TODAY) == []

    environments[0].monthly_budget_usd = Decimal("20")  # dev
    environments[2].monthly_budget_usd = Decimal("90")  # production
    alerts = check_budgets(environments, TODAY)
    assert sorted((a.environment.slug, a.threshold_percent) for a in alerts) == [
        ("dev", 80), ("dev", 100), ("production", 80), ("production", 100),
    ]  # fmt: skip
    # The next check: one aggregate, one look at what was sent; nothing again.
    with django_assert_num_queries(2):
        assert check_budgets(environments, TODAY) == []


def test_it_ignores_spend_under_tags_no_environment_has(cost_explorer, catalog):
    other = {"Keys": ["Environment$payments-production"],
             "Metrics": {"UnblendedCost": {"Amount": "99.0", "Unit": "USD"}}}  # fmt: skip
    untagged = {"Keys": ["Environment$"],
                "Metrics": {"UnblendedCost": {"Amount": "12.0", "Unit": "USD"}}}  # fmt: skip
    queue_answer(cost_explorer, {}, extra_groups=(other, untagged))
    assert fetch_costs(today=TODAY) == {"snapshots": 0, "alerts": 0, "failed_accounts": []}
    assert not CostSnapshot.objects.exists()


def test_it_uses_the_environments_own_cost_tag(cost_explorer, catalog):
    production = env(catalog, "production")
    assert tag_value(production) == "fraud-detector-production"
    production.cost_tag = "fd-prod"
    production.save()
    queue_answer(cost_explorer, {"fd-prod": "6.0000", "fraud-detector-production": "1.0000"})
    fetch_costs(today=TODAY)
    assert set(production.cost_snapshots.values_list("amount_usd", flat=True)) == {Decimal("6")}


def test_it_tells_open_dashboards_when_figures_change(
    cost_explorer, catalog, django_capture_on_commit_callbacks
):
    production = env(catalog, "production")
    queue_answer(cost_explorer, DAILY)
    with django_capture_on_commit_callbacks() as callbacks:
        fetch_costs(today=TODAY)
    message = async_to_sync(broadcast_heard)(production.pk, callbacks)
    assert message["environment"] == production.pk and message["what"] == "costs"


def test_it_reads_an_account_through_its_role(cost_explorer, catalog):
    production = env(catalog, "production")
    production.aws_role_arn = "arn:aws:iam::210987654321:role/gantry-costs"
    production.save()
    # Each account has its own Cost Explorer: the default credentials' (dev,
    # staging) and the role's; each is asked once, with its own credentials.
    queue_answer(cost_explorer, {"fraud-detector-dev": "1.6500"})
    queue_answer(cost_explorer, {"fraud-detector-production": "6.1000"},
                 account_id="210987654321")  # fmt: skip
    assert fetch_costs(today=TODAY) == {"snapshots": 60, "alerts": 0, "failed_accounts": []}
    assert production.cost_snapshots.count() == env(catalog, "dev").cost_snapshots.count() == 30


def test_it_reports_an_account_it_cannot_read(cost_explorer, catalog, monkeypatch):
    # Nothing listens on port 9: the call fails, the job carries on and says so.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    summary = fetch_costs(today=TODAY)
    assert summary["failed_accounts"] == ["default"]
    with pytest.raises(CommandError, match="could not be read for: default"):
        call_command("fetch_costs", "--days", "3")


def test_the_command_backfills_a_number_of_days(cost_explorer, catalog, capsys):
    queue_answer(cost_explorer, DAILY, days=5, until=date.today())
    call_command("fetch_costs", "--days", "5")
    assert "Stored 10 new or changed daily figures" in capsys.readouterr().out
    with pytest.raises(CommandError, match="between 1 and 400"):
        call_command("fetch_costs", "--days", "0")


def test_the_demo_spend_matches_seed_002(cost_explorer, catalog):
    sandbox.seed_cost_explorer(cost_explorer, sandbox.DEMO_MONTHLY_SPEND)
    fetch_costs(days=60)
    production, dev = env(catalog, "production"), env(catalog, "dev")
    assert production.cost_snapshots.count() == dev.cost_snapshots.count() == 60
    # Thirty days of demo spend: production ≈ $185, dev ≈ $50 (noise ±15 % a day).
    last_30 = [sum(e.cost_snapshots.values_list("amount_usd", flat=True)[:30])
               for e in (production, dev)]  # fmt: skip
    assert Decimal("170") < last_30[0] < Decimal("200")
    assert Decimal("45") < last_30[1] < Decimal("55")


def test_it_is_registered_as_a_daily_job_on_the_low_queue():
    from django_rq import get_connection

    scheduler = CronScheduler(connection=get_connection("low"))
    scheduler.load_config_from_file("deployments.cron")
    job = next(j for j in scheduler.get_jobs() if j.func is fetch_costs)
    assert (job.queue_name, job.cron, job.interval) == ("low", "15 6 * * *", None)


def test_the_demo_seed_fetches_the_sandbox_spend(cost_explorer, db):
    sandbox.seed_cost_explorer(cost_explorer, sandbox.DEMO_MONTHLY_SPEND)
    call_command("seed_demo", stdout=io.StringIO())
    production = Environment.objects.get(application__slug="fraud-detector", slug="production")
    figures = month_to_date([production])[production.pk]
    assert production.cost_snapshots.count() == 60
    assert figures.budget_usd == Decimal("185")
    # A whole month's run-rate of the demo's production lands near its budget.
    assert Decimal("150") < figures.forecast_usd < Decimal("220")
