"""The dashboard (/): a card per visible environment, grouped by application,
problems first, filters, the card partial, and a constant number of queries."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.choices import Decision, Status, StepStatus
from deployments.fake_alertmanager import FakeAlertmanager
from deployments.models import Approval, CostEstimate, Deployment, Release, StepRun
from environments.alarms import poll_environment
from environments.choices import AlarmSource, AlarmState, Tier
from environments.costs import reporting_day
from environments.models import (
    Alarm,
    AlarmTransition,
    Application,
    CostSnapshot,
    Environment,
    Service,
    Step,
)
from tests.conftest import env, grant, image
from tests.environments.ui import browser

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def deployment(release, environment, status, user, minutes_ago: int = 10) -> Deployment:
    """Test setup only: a deployment in `status`, as the engine would leave it."""
    now = timezone.now()
    final = status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    return Deployment.objects.create(
        release=release, environment=environment, requested_by=user, reason="dashboard test",
        status=status, required_approvals=environment.required_approvals,
        created_at=now - timedelta(minutes=minutes_ago + 5),
        started_at=now - timedelta(minutes=minutes_ago + 2) if status != Status.AWAITING_APPROVAL
        else None,
        finished_at=now - timedelta(minutes=minutes_ago) if final else None,
    )  # fmt: skip


def approve(deployment: Deployment, *users) -> None:
    for user in users:
        Approval.objects.create(deployment=deployment, user=user, decision=Decision.APPROVE,
                                digest=deployment.approval_digest())  # fmt: skip


def alarm(environment, name: str, state: str) -> Alarm:
    now = timezone.now()
    row = Alarm.objects.create(environment=environment, source=AlarmSource.CLOUDWATCH, name=name,
                               state=state, since=now, checked_at=now)  # fmt: skip
    AlarmTransition.objects.create(alarm=row, environment=environment, to_state=state)
    return row


def cards(html: str) -> list[str]:
    """The environment ids of the cards, in page order."""
    marker = 'data-testid="environment-card" data-environment="'
    return [part.split('"', 1)[0] for part in html.split(marker)[1:]]


def card_html(html: str, environment) -> str:
    start = html.index(f'id="environment-card-{environment.pk}"')
    return html[start : html.index("</article>", start)]


@pytest.fixture
def ledger(users):
    app = Application.objects.create(slug="ledger", name="Ledger")
    Service.objects.create(application=app, slug="ledger-api", name="ledger-api")
    production = Environment.objects.create(application=app, slug="production", name="Ledger prod",
                                            order=1, tier=Tier.PRODUCTION)  # fmt: skip
    grant(users["alice"], production, "viewer")
    return app


def test_it_shows_a_card_per_visible_environment_grouped_by_application(users, catalog, ledger):
    response = browser(users["alice"]).get(reverse("home"))
    assert response.status_code == 200
    html = response.content.decode()
    assert len(cards(html)) == 4
    assert 'data-testid="application-fraud-detector"' in html
    assert 'data-testid="application-ledger"' in html
    fraud = html.index('data-testid="application-fraud-detector"')
    group = html[fraud : html.find("</section>", fraud)]
    assert cards(group) == [str(env(catalog, s).pk) for s in ("dev", "staging", "production")]


def test_it_shows_what_runs_the_last_deployment_and_its_approvers(users, catalog, release):
    staging = env(catalog, "staging")
    done = deployment(release, staging, Status.SUCCEEDED, users["alice"])
    approve(done, users["bob"])
    html = card_html(browser(users["dave"]).get(reverse("home")).content.decode(), staging)
    assert "1.4.0" in html
    assert "fraud-api@aaaaaaaaaaaa" in html
    assert "Succeeded" in html
    assert "approved by bob" in html
    assert reverse("deployment-detail", args=[done.pk]) in html


def test_of_two_finished_at_the_same_instant_the_later_request_runs(users, catalog, release):
    """The card's rule for "what runs" is the environment page's and the
    rollback's: latest finish, then latest request."""
    staging = env(catalog, "staging")
    newer = Release.register(catalog, "1.4.1", {s: image(s, "b") for s in SERVICES},
                             users["alice"])  # fmt: skip
    first = deployment(release, staging, Status.SUCCEEDED, users["alice"])
    second = deployment(newer, staging, Status.SUCCEEDED, users["alice"])
    Deployment.objects.filter(pk=second.pk).update(finished_at=first.finished_at)
    expected = staging.deployments.succeeded_latest_first().first()
    assert expected == second
    html = card_html(browser(users["dave"]).get(reverse("home")).content.decode(), staging)
    assert reverse("deployment-detail", args=[second.pk]) in html
    assert reverse("deployment-detail", args=[first.pk]) not in html


def test_it_counts_pending_approvals_with_links(users, catalog, release):
    production = env(catalog, "production")
    waiting = deployment(release, production, Status.AWAITING_APPROVAL, users["alice"])
    html = card_html(browser(users["bob"]).get(reverse("home")).content.decode(), production)
    assert "1 awaiting approval" in html
    assert reverse("deployment-detail", args=[waiting.pk]) in html


def test_it_shows_the_running_deployment_with_step_progress(users, catalog, release):
    dev = env(catalog, "dev")
    for order, (name, kind) in enumerate(
        [("terraform apply", "terraform"), ("fraud-api rolling", "ecs_rolling"),
         ("health", "http_check")], start=1,
    ):  # fmt: skip
        Step.objects.create(environment=dev, order=order, name=name, kind=kind)
    running = deployment(release, dev, Status.RUNNING, users["alice"])
    StepRun.objects.create(deployment=running, order=1, name="terraform apply", kind="terraform",
                           status=StepStatus.SUCCEEDED)  # fmt: skip
    StepRun.objects.create(deployment=running, order=2, name="fraud-api rolling",
                           kind="ecs_rolling", status=StepStatus.RUNNING)  # fmt: skip
    html = card_html(browser(users["dave"]).get(reverse("home")).content.decode(), dev)
    assert "step 2 of 3: fraud-api rolling" in html
    assert reverse("deployment-detail", args=[running.pk]) in html


def test_it_shows_health_from_the_last_http_check(users, catalog, release):
    staging = env(catalog, "staging")
    done = deployment(release, staging, Status.SUCCEEDED, users["alice"])
    StepRun.objects.create(deployment=done, order=1, name="health", kind="http_check",
                           status=StepStatus.SUCCEEDED, finished_at=done.finished_at)  # fmt: skip
    html = browser(users["dave"]).get(reverse("home")).content.decode()
    assert "healthy" in card_html(html, staging)
    assert ">unknown<" in card_html(html, env(catalog, "dev"))


def test_it_shows_the_worst_alarm_state_with_names(users, catalog):
    production, staging, dev = (env(catalog, s) for s in ("production", "staging", "dev"))
    alarm(production, "fraud-detector-production-ServiceDown", AlarmState.OK)
    alarm(production, "fraud-detector-production-HighErrorRate", AlarmState.ALARM)
    Environment.objects.filter(pk=staging.pk).update(
        alarm_sources={"cloudwatch": {"alarm_prefix": "fraud-detector-staging-"}}
    )
    html = browser(users["dave"]).get(reverse("home")).content.decode()
    prod_card = card_html(html, production)
    assert 'data-state="ALARM"' in prod_card
    assert "fraud-detector-production-HighErrorRate" in prod_card
    assert "ServiceDown" not in prod_card  # only the alarms in the worst state are named
    assert 'data-state="unknown"' in card_html(html, staging)  # sources, never polled
    assert "no alarm sources" in card_html(html, dev)


def test_it_shows_sources_that_answered_with_nothing_as_ok(
    users, catalog, django_capture_on_commit_callbacks
):
    """An Alertmanager lists only what fires: a quiet one is OK once polled."""
    production = env(catalog, "production")
    quiet = FakeAlertmanager().start()
    try:
        Environment.objects.filter(pk=production.pk).update(
            alarm_sources={"alertmanager": {"url": quiet.url, "matchers": ["namespace=prod"]}}
        )
        page = browser(users["dave"])
        before = card_html(page.get(reverse("home")).content.decode(), production)
        assert 'data-state="unknown"' in before and "not polled yet" in before
        with django_capture_on_commit_callbacks(execute=True):
            assert poll_environment(Environment.objects.get(pk=production.pk)) == []
        # No alarm row changed, yet the kept card was rebuilt.
        after = card_html(page.get(reverse("home")).content.decode(), production)
    finally:
        quiet.stop()
    assert 'data-state="OK"' in after and "nothing firing" in after
    assert "alarms unknown" not in after
    panel = page.get(reverse("environment-detail", args=[catalog.slug, "production"]))
    assert 'data-testid="nothing-firing"' in panel.content.decode()


def test_it_shows_month_to_date_spend_and_the_estimate_against_the_budget(users, catalog, release):
    """Spend of the month the figures run through (yesterday's), as on the cost page."""
    production = env(catalog, "production")
    Environment.objects.filter(pk=production.pk).update(monthly_budget_usd=Decimal("185"))
    yesterday = reporting_day()
    first = yesterday.replace(day=1)
    CostSnapshot.objects.create(environment=production, day=first, amount_usd=Decimal("100.25"))
    if yesterday != first:
        CostSnapshot.objects.create(
            environment=production, day=yesterday, amount_usd=Decimal("6.25")
        )
    not_counted = [first - timedelta(1), yesterday + timedelta(1)]  # month before; today, partial
    for day in not_counted:
        CostSnapshot.objects.create(environment=production, day=day, amount_usd=Decimal("999"))
    current = deployment(release, production, Status.SUCCEEDED, users["alice"])
    CostEstimate.objects.create(deployment=current, region="ca-central-1",
                                monthly_total_usd=Decimal("183.40"), previous_monthly_usd=0,
                                catalog_version="test")  # fmt: skip
    html = card_html(browser(users["dave"]).get(reverse("home")).content.decode(), production)
    spent = "106.50" if yesterday != first else "100.25"
    assert f"${spent} in {first:%B}" in html
    assert "est. $183.40/month" in html
    assert "budget $185" in html
    assert "over budget" not in html


def test_it_puts_problems_first(users, catalog, ledger, release):
    production, staging = env(catalog, "production"), env(catalog, "staging")
    alarm(production, "fraud-detector-production-HighErrorRate", AlarmState.ALARM)
    deployment(release, staging, Status.FAILED, users["alice"])
    html = browser(users["alice"]).get(reverse("home")).content.decode()
    order = cards(html)
    # The application with a problem comes before the calm one; inside it the
    # alarm before the failure before the calm development environment.
    assert order[:3] == [str(production.pk), str(staging.pk), str(env(catalog, "dev").pk)]
    assert order[3] == str(ledger.environments.get().pk)
    assert "2 need attention" in html


def test_it_marks_spend_over_budget_as_a_problem(users, catalog):
    dev = env(catalog, "dev")
    Environment.objects.filter(pk=dev.pk).update(monthly_budget_usd=Decimal("50"))
    CostSnapshot.objects.create(environment=dev, day=reporting_day(), amount_usd=60)
    html = card_html(browser(users["dave"]).get(reverse("home")).content.decode(), dev)
    assert 'data-problems="over budget"' in html


def test_it_filters_by_application_and_tier(users, catalog, ledger):
    client = browser(users["alice"])
    only_ledger = client.get(reverse("home"), {"application": "ledger"}).content.decode()
    assert cards(only_ledger) == [str(ledger.environments.get().pk)]
    production = client.get(reverse("home"), {"tier": "production"}).content.decode()
    assert sorted(cards(production)) == sorted(
        [str(env(catalog, "production").pk), str(ledger.environments.get().pk)]
    )
    nothing = client.get(reverse("home"), {"application": "no-such-app"}).content.decode()
    assert "No environment matches these filters" in nothing
    # An unknown tier is ignored rather than answered with an error.
    assert len(cards(client.get(reverse("home"), {"tier": "moon"}).content.decode())) == 4


def test_it_shows_an_outsider_nothing(users, catalog, release):
    deployment(release, env(catalog, "production"), Status.FAILED, users["alice"])
    html = browser(users["mallory"]).get(reverse("home")).content.decode()
    assert cards(html) == []
    assert "Fraud Detector" not in html
    assert "no role in any environment" in html


def test_it_shows_only_environments_with_a_role(users, catalog):
    grant(users["mallory"], env(catalog, "dev"), "viewer")
    html = browser(users["mallory"]).get(reverse("home")).content.decode()
    assert cards(html) == [str(env(catalog, "dev").pk)]


def test_it_needs_sign_in(client, catalog):
    for url in (reverse("home"), reverse("dashboard-card", args=[env(catalog, "dev").pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_refuses_post(users, catalog):
    client = browser(users["alice"])
    assert client.post(reverse("home")).status_code == 405
    assert client.post(reverse("dashboard-card", args=[env(catalog, "dev").pk])).status_code == 405


def test_the_card_partial_renders_one_card(users, catalog):
    production = env(catalog, "production")
    alarm(production, "fraud-detector-production-ServiceDown", AlarmState.ALARM)
    response = browser(users["dave"]).get(reverse("dashboard-card", args=[production.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert cards(html) == [str(production.pk)]
    assert "ServiceDown" in html
    assert "<html" not in html


def test_the_card_partial_is_a_404_without_a_role(users, catalog):
    grant(users["mallory"], env(catalog, "dev"), "viewer")
    client = browser(users["mallory"])
    assert client.get(reverse("dashboard-card", args=[env(catalog, "dev").pk])).status_code == 200
    production = reverse("dashboard-card", args=[env(catalog, "production").pk])
    assert client.get(production).status_code == 404
    assert client.get(reverse("dashboard-card", args=[999_999])).status_code == 404


# -- a constant number of queries ----------------------------------------------------


def populate(users, applications: int, deployments_each: int) -> None:
    """`applications` × 3 environments, each with history, a run, requests,
    alarms with transitions, costs and an estimate."""
    today = timezone.localdate()
    have = Application.objects.count()
    for a in range(have, have + applications):
        app = Application.objects.create(slug=f"app-{a}", name=f"App {a}")
        for slug in SERVICES:
            Service.objects.create(application=app, slug=slug, name=slug)
        environments = [
            Environment.objects.create(
                application=app, slug=f"env-{order}", name=f"Env {order}", order=order,
                monthly_budget_usd=100,
                alarm_sources={"cloudwatch": {"alarm_prefix": f"app-{a}-"}},
            )
            for order in (1, 2, 3)
        ]  # fmt: skip
        for environment in environments:
            for name, role in (("alice", "deployer"), ("bob", "approver"), ("dave", "viewer")):
                grant(users[name], environment, role)
            Step.objects.create(environment=environment, order=1, name="health", kind="http_check")
        release = Release.register(
            app, "2.0.0", {s: image(s, "b") for s in SERVICES}, users["alice"]
        )
        for environment in environments:
            add_history(users, release, environment, deployments_each)
            running = deployment(release, environment, Status.RUNNING, users["alice"])
            StepRun.objects.create(deployment=running, order=1, name="health", kind="http_check",
                                   status=StepStatus.RUNNING)  # fmt: skip
            for _ in range(2):
                deployment(release, environment, Status.AWAITING_APPROVAL, users["alice"])
            alarm(environment, f"app-{a}-HighErrorRate", AlarmState.ALARM)
            CostSnapshot.objects.create(environment=environment, day=today, amount_usd=3)


def add_history(users, release, environment, count: int) -> None:
    """Finished deployments with approvals, health checks and an estimate;
    alarm transitions as many."""
    for n in range(count):
        status = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)[n % 3]
        done = deployment(release, environment, status, users["alice"], minutes_ago=n + 50)
        approve(done, users["bob"])
        StepRun.objects.create(
            deployment=done, order=1, name="health", kind="http_check",
            status=StepStatus.SUCCEEDED, finished_at=done.finished_at,
        )  # fmt: skip
        CostEstimate.objects.create(deployment=done, region="ca-central-1", monthly_total_usd=90,
                                    previous_monthly_usd=80, catalog_version="test")  # fmt: skip
        for row in environment.alarms.all():
            AlarmTransition.objects.create(alarm=row, environment=environment,
                                           to_state=AlarmState.OK)  # fmt: skip


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_it_keeps_the_number_of_queries_constant(users, settings):
    """Every card built (none kept in the cache): the same queries for 3
    environments as for 30, and for 10× the history."""
    settings.DASHBOARD_CARD_SECONDS = 0
    client = browser(users["dave"])
    populate(users, applications=1, deployments_each=2)
    small = count_queries(client, reverse("home"))
    assert small <= 12
    populate(users, applications=9, deployments_each=2)  # 3 → 30 environments
    html = client.get(reverse("home")).content.decode()
    assert len(cards(html)) == 30
    assert "step 1 of 1: health" in html
    assert html.count("approved by bob") == 30
    assert count_queries(client, reverse("home")) == small
    for environment in Environment.objects.select_related("application"):  # 10× the history
        release = Release.objects.get(application=environment.application)
        add_history(users, release, environment, 18)
    assert count_queries(client, reverse("home")) == small
    environment_id = Environment.objects.first().pk
    assert count_queries(client, reverse("dashboard-card", args=[environment_id])) <= small


def test_kept_cards_cost_no_card_queries(users):
    """Cards kept in the cache: the page reads the session, the user, the
    environments and the applications, whatever the number of cards."""
    client = browser(users["dave"])
    populate(users, applications=1, deployments_each=2)
    built = count_queries(client, reverse("home"))
    kept = count_queries(client, reverse("home"))
    assert kept == 4 < built
    populate(users, applications=9, deployments_each=2)
    client.get(reverse("home"))  # builds the 27 new cards
    html = client.get(reverse("home")).content.decode()
    assert len(cards(html)) == 30
    assert html.count("approved by bob") == 30
    assert count_queries(client, reverse("home")) == kept
