"""Alarm polling: CloudWatch alarms in the real moto server, the FAKE
Alertmanager (deployments/fake_alertmanager.py: it can be told to answer
badly or late; tests/test_alertmanager_sandbox.py reads Debian's real one),
unreachable sources, concurrent pollers and the job."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import boto3
import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rq import SimpleWorker

from deployments.choices import Channel, NotificationEvent
from deployments.fake_alertmanager import FakeAlertmanager, alert
from deployments.models import Notification
from environments import alarms
from environments.alarms import poll_alarms, poll_environment, validate_alarm_sources
from environments.choices import AlarmState
from environments.models import Alarm, AlarmTransition, Environment
from environments.steps import ConfigError
from portal.core.models import AuditEvent
from tests.admin.conftest import admin_client, admin_form_data, root  # noqa: F401 (fixtures)
from tests.conftest import env
from tests.live import broadcast_heard
from tests.runners.conftest import demo_aws, moto_endpoint  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

WEBHOOK = "https://hooks.example.com/services/T000/B000/gantry"


@pytest.fixture
def aws(moto_endpoint, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture
def alertmanager():
    fake = FakeAlertmanager().start()
    yield fake
    fake.stop()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def set_alarm(endpoint: str, name: str, state: str, reason: str = "Threshold crossed") -> None:
    cloudwatch = boto3.client("cloudwatch", endpoint_url=endpoint, region_name="ca-central-1")
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)


def watch(environment: Environment, **sources) -> Environment:
    environment.alarm_sources = sources
    environment.save(update_fields=["alarm_sources"])
    return environment


def states(environment: Environment) -> dict[str, tuple[str, str]]:
    return {a.name: (a.state, a.reason) for a in Alarm.objects.filter(environment=environment)}


def test_it_records_a_change_to_alarm_once_and_notifies_each_channel(
    catalog, aws, demo_aws, django_capture_on_commit_callbacks
):
    staging = env(catalog, "staging")
    staging.webhook_url = WEBHOOK
    staging.save()
    prefix = f"fraud-detector-{demo_aws['environment']}-"
    watch(staging, cloudwatch={"alarm_prefix": prefix})

    with django_capture_on_commit_callbacks() as callbacks:
        first = poll_environment(staging)
    # Open dashboards hear of it once the transaction commits.
    message = async_to_sync(broadcast_heard)(staging.pk, callbacks)
    assert message == {"type": "environment.changed", "environment": staging.pk, "what": "alarms"}
    assert sorted((t.alarm.name, t.from_state, t.to_state) for t in first) == [
        (f"{prefix}4xx", "", "OK"), (f"{prefix}5xx", "", "OK"), (f"{prefix}latency", "", "OK"),
    ]  # fmt: skip
    # Alarms first seen OK are news to no one.
    assert not Notification.objects.exists()

    set_alarm(aws, f"{prefix}5xx", "ALARM", "Threshold Crossed: 42 5xx in 5 minutes")
    second = poll_environment(staging)
    assert [(t.alarm.name, t.from_state, t.to_state, t.reason) for t in second] == [
        (f"{prefix}5xx", "OK", "ALARM", "Threshold Crossed: 42 5xx in 5 minutes")
    ]
    alarm = Alarm.objects.get(name=f"{prefix}5xx")
    assert (alarm.state, alarm.since) == ("ALARM", second[0].at)
    notes = Notification.objects.filter(environment=staging, event=NotificationEvent.ALARM)
    assert sorted(notes.values_list("channel", flat=True)) == [Channel.EMAIL, Channel.WEBHOOK]
    email = notes.get(channel=Channel.EMAIL)
    assert email.recipients == ["bob@example.com", "carol@example.com", "erin@example.com"]
    assert email.subject == f"fraud-detector/staging: {prefix}5xx OK → ALARM"
    assert "42 5xx in 5 minutes" in email.body
    assert email.body.endswith(
        "http://127.0.0.1:8000"
        + reverse("environment-detail", args=["fraud-detector", "staging"])
        + "\n"
    )

    # Nothing changed: nothing written, no one told.
    assert poll_environment(staging) == []
    assert AlarmTransition.objects.filter(environment=staging).count() == 4
    assert notes.count() == 2


def test_it_selects_alarms_by_names_and_prefix(catalog, aws, demo_aws):
    prefix = f"fraud-detector-{demo_aws['environment']}-"
    dev, staging = env(catalog, "dev"), env(catalog, "staging")
    watch(dev, cloudwatch={"alarm_names": [f"{prefix}5xx", f"{prefix}latency", f"{prefix}cpu"]})
    watch(staging, cloudwatch={"alarm_names": [f"{prefix}5xx"], "alarm_prefix": f"{prefix}4"})
    poll_environment(dev)
    poll_environment(staging)

    assert states(dev) == {
        f"{prefix}5xx": ("OK", "Sandbox start"),
        f"{prefix}latency": ("OK", "Sandbox start"),
        f"{prefix}cpu": (
            "unknown",
            "Not found in CloudWatch (ca-central-1): deleted or misspelt in alarm_names?",
        ),
    }
    assert set(states(staging)) == {f"{prefix}5xx", f"{prefix}4xx"}


def test_it_resolves_environment_references_like_a_step(catalog, aws, demo_aws):
    staging = env(catalog, "staging")
    staging.variables = {"aws_environment": demo_aws["environment"]}
    watch(staging, cloudwatch={"alarm_prefix": "fraud-detector-${var.aws_environment}-"})
    poll_environment(staging)
    assert len(states(staging)) == 3


def test_it_records_insufficient_data(catalog, aws, demo_aws):
    name = f"fraud-detector-{demo_aws['environment']}-latency"
    staging = watch(env(catalog, "staging"), cloudwatch={"alarm_names": [name]})
    poll_environment(staging)
    set_alarm(aws, name, "INSUFFICIENT_DATA", "No datapoints: the ALB has no traffic")
    [change] = poll_environment(staging)
    assert (change.from_state, change.to_state) == ("OK", "INSUFFICIENT_DATA")
    assert states(staging)[name] == ("INSUFFICIENT_DATA", "No datapoints: the ALB has no traffic")


def test_it_reads_alertmanager_with_matchers(catalog, alertmanager):
    """Seed 003's rules: HighErrorRate, ServiceDown (critical), HighMemoryUsage (warning)."""
    ns = "fintech-ai-staging"
    alertmanager.alerts = [
        alert("HighErrorRate", summary="High error rate detected", namespace=ns,
              severity="critical", service="api-gateway"),
        alert("HighErrorRate", summary="High error rate detected", namespace=ns,
              severity="critical", service="ml-service"),
        alert("ServiceDown", summary="Service ml-service is down", namespace=ns,
              severity="critical", service="ml-service"),
        alert("HighMemoryUsage", namespace=ns, severity="warning", service="frontend"),
        alert("ServiceDown", namespace="fintech-ai-prod", severity="critical"),
        alert("ServiceDown", namespace=ns, severity="critical", service="test-canary"),
        alert("HighCPUUsage", state="suppressed", namespace=ns, severity="critical"),
        alert("Watchdog", namespace=ns, severity="critical"),
    ]  # fmt: skip
    staging = env(catalog, "staging")
    staging.variables = {"namespace": ns}
    matchers = ["namespace=${var.namespace}", "severity=~critical|page", "alertname!=Watchdog",
                "service!~test-.*"]  # fmt: skip
    watch(staging, alertmanager={"url": alertmanager.url, "matchers": matchers})

    poll_environment(staging)
    assert states(staging) == {
        "HighErrorRate": ("ALARM", "2 alerts firing: High error rate detected"),
        "ServiceDown": ("ALARM", "Service ml-service is down"),
    }
    assert alertmanager.queries[0]["filter"] == [
        f'namespace="{ns}"', 'severity=~"critical|page"', 'alertname!="Watchdog"',
        'service!~"test-.*"',
    ]  # fmt: skip
    assert alertmanager.queries[0]["silenced"] == ["false"]
    assert Alarm.objects.get(name="ServiceDown").since.isoformat() == "2026-05-01T10:00:00+00:00"

    # ServiceDown stops firing: Alertmanager no longer lists it.
    alertmanager.alerts = alertmanager.alerts[:2]
    [change] = poll_environment(staging)
    assert (change.alarm.name, change.from_state, change.to_state) == ("ServiceDown", "ALARM", "OK")
    assert states(staging)["ServiceDown"] == ("OK", "Resolved: no longer firing.")


def test_it_shows_an_unreachable_source_as_unknown_never_ok(catalog, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    staging = watch(
        env(catalog, "staging"),
        cloudwatch={"alarm_prefix": "fraud-detector-${environment}-"},
        alertmanager={"url": f"http://127.0.0.1:{port}", "matchers": ["namespace=fraud"]},
    )
    changes = poll_environment(staging)
    assert {(t.alarm.source, t.alarm.name, t.to_state) for t in changes} == {
        ("cloudwatch", "cloudwatch: fraud-detector-${environment}-*", "unknown"),
        ("alertmanager", "alertmanager: namespace=fraud", "unknown"),
    }
    reasons = {a.source: a.reason for a in Alarm.objects.filter(environment=staging)}
    assert "Could not connect to the endpoint URL" in reasons["cloudwatch"]
    assert "Connection refused" in reasons["alertmanager"]
    assert not Alarm.objects.exclude(state=AlarmState.UNKNOWN).exists()
    # An unknown alarm is news: the approvers are told.
    assert Notification.objects.filter(event=NotificationEvent.ALARM).count() == 1


def test_it_turns_known_alarms_unknown_while_the_source_is_down_and_back(
    catalog, aws, demo_aws, monkeypatch
):
    prefix = f"fraud-detector-{demo_aws['environment']}-"
    staging = watch(env(catalog, "staging"), cloudwatch={"alarm_prefix": prefix})
    poll_environment(staging)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    down = poll_environment(staging)
    assert sorted((t.from_state, t.to_state) for t in down) == [("OK", "unknown")] * 3
    assert not Alarm.objects.filter(name__startswith="cloudwatch: ").exists()

    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    back = poll_environment(staging)
    assert sorted((t.from_state, t.to_state) for t in back) == [("unknown", "OK")] * 3
    # History stays in order even though CloudWatch's own timestamp is older.
    latest = AlarmTransition.objects.filter(environment=staging).first()
    assert (latest.from_state, latest.to_state) == ("unknown", "OK")


def test_a_poll_without_changes_writes_no_alarm_row(catalog, alertmanager):
    alertmanager.alerts = [
        alert("ServiceDown", summary="ml-service is down", namespace="fraud"),
        alert("HighErrorRate", summary="5xx above 2 %", namespace="fraud"),
    ]
    staging = watch(env(catalog, "staging"), alertmanager={"url": alertmanager.url})
    poll_environment(staging)
    first_check = Environment.objects.get(pk=staging.pk).alarms_checked_at
    rows = Alarm.objects.filter(environment=staging).values_list("name", "checked_at")
    stored = list(rows)

    def alarm_updates() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            poll_environment(staging)
        return [q["sql"] for q in queries.captured_queries
                if q["sql"].startswith('UPDATE "environments_alarm"')]  # fmt: skip

    assert alarm_updates() == []
    assert list(rows) == stored
    # The time of the check is kept once, on the environment, as the page shows it.
    assert Environment.objects.get(pk=staging.pk).alarms_checked_at > first_check

    # A new reason rewrites that one alarm only.
    alertmanager.alerts[0] = alert(
        "ServiceDown", summary="ml-service: 0 of 2 tasks", namespace="fraud"
    )
    assert len(alarm_updates()) == 1
    assert states(staging)["ServiceDown"] == ("ALARM", "ml-service: 0 of 2 tasks")


def test_it_names_an_alert_without_labels_instead_of_failing_the_source(catalog, alertmanager):
    staging = env(catalog, "staging")
    watch(staging, alertmanager={"url": alertmanager.url})
    alertmanager.answer = json.dumps([{"status": {"state": "active"}}]).encode()
    poll_environment(staging)
    assert states(staging) == {"unnamed alert": ("ALARM", "Firing")}


def test_it_drops_the_placeholder_once_the_source_answers(catalog, alertmanager):
    staging = env(catalog, "staging")
    watch(staging, alertmanager={"url": alertmanager.url, "matchers": ["namespace=fraud"]})
    alertmanager.answer = b"<html>502 Bad Gateway</html>"
    poll_environment(staging)
    assert states(staging) == {
        "alertmanager: namespace=fraud": (
            "unknown",
            f"Cannot read Alertmanager at {alertmanager.url}: Expecting value: line 1 column 1 "
            "(char 0).",
        )
    }
    alertmanager.answer = None
    assert poll_environment(staging) == []
    assert states(staging) == {}


@pytest.mark.django_db(transaction=True)
def test_it_drops_the_alarms_of_a_source_taken_out_of_the_config(catalog, alertmanager):
    alertmanager.alerts = [alert("ServiceDown", namespace="fraud", severity="critical")]
    staging = env(catalog, "staging")
    watch(staging, alertmanager={"url": alertmanager.url, "matchers": ["namespace=fraud"]})
    poll_environment(staging)
    assert set(states(staging)) == {"ServiceDown"}
    watch(staging)  # alarm_sources = {}: polled once more by the job, to clean up
    assert poll_alarms() == 0
    assert states(staging) == {}
    assert not AlarmTransition.objects.exists()


def test_it_shows_a_config_saved_past_the_admin_as_unknown(catalog):
    staging = watch(env(catalog, "staging"), cloudwatch={"alarm_prefx": "fraud-"})
    [change] = poll_environment(staging)
    assert (change.alarm.name, change.to_state) == ("cloudwatch: alarm_sources", "unknown")
    assert change.reason.startswith("Invalid alarm_sources: cloudwatch.alarm_prefx: unknown key")


def test_it_gives_up_on_a_slow_source(catalog, alertmanager, monkeypatch):
    monkeypatch.setattr(alarms, "SOURCE_TIMEOUT_SECONDS", 0.3)
    # Waiting for the answer would take 5 s; giving up takes 0.3 s. The bound
    # between them leaves a loaded CI machine seconds, not milliseconds.
    alertmanager.delay = 5
    staging = watch(env(catalog, "staging"), alertmanager={"url": alertmanager.url, "matchers": []})
    started = time.monotonic()
    [change] = poll_environment(staging)
    assert time.monotonic() - started < 3
    assert change.to_state == "unknown"
    assert "timed out" in change.reason


def test_it_masks_secrets_in_reasons(catalog):
    staging = env(catalog, "staging")
    staging.secret_variables = {"AM_PASSWORD": "s3cr3t-alertmanager-pass"}
    staging.save()
    url = f"http://gantry:${{secret.AM_PASSWORD}}@127.0.0.1:{closed_port()}"
    watch(staging, alertmanager={"url": url, "matchers": ["namespace=fraud"]})
    [change] = poll_environment(staging)
    assert "s3cr3t" not in change.reason
    assert "gantry:****@127.0.0.1" in change.reason


@pytest.mark.django_db(transaction=True)
def test_it_records_one_transition_when_two_pollers_race(catalog, aws, demo_aws, monkeypatch):
    prefix = f"fraud-detector-{demo_aws['environment']}-"
    staging = watch(env(catalog, "staging"), cloudwatch={"alarm_prefix": prefix})
    read = alarms.read_sources
    both_read = threading.Barrier(2, timeout=20)

    def read_then_wait(environment):
        # Both pollers have the same readings before either writes: the race.
        readings = read(environment)
        both_read.wait()
        return readings

    monkeypatch.setattr(alarms, "read_sources", read_then_wait)
    results: list[list] = []

    def poller() -> None:
        try:
            results.append(poll_environment(Environment.objects.get(pk=staging.pk)))
        finally:
            connections.close_all()

    def race() -> list[AlarmTransition]:
        results.clear()
        threads = [threading.Thread(target=poller) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 2
        return [t for result in results for t in result]

    # Both insert the three new alarms: the unique constraint keeps one of each.
    assert len(race()) == 3
    set_alarm(aws, f"{prefix}5xx", "ALARM")
    changed = race()
    assert [(t.from_state, t.to_state) for t in changed] == [("OK", "ALARM")]
    assert AlarmTransition.objects.filter(environment=staging).count() == 4
    assert Notification.objects.filter(event=NotificationEvent.ALARM).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_job_polls_every_environment_without_waiting_for_a_slow_one(
    catalog, aws, demo_aws, alertmanager, monkeypatch
):
    monkeypatch.setattr(alarms, "SOURCE_TIMEOUT_SECONDS", 1)
    alertmanager.delay = 6  # waited for, the poll would take over 6 s; given up on, about 1 s
    prefix = f"fraud-detector-{demo_aws['environment']}-"
    watch(env(catalog, "dev"), alertmanager={"url": alertmanager.url, "matchers": []})
    watch(env(catalog, "staging"), cloudwatch={"alarm_prefix": prefix})
    # production has no sources: not polled.
    started = time.monotonic()
    assert poll_alarms() == 4
    assert time.monotonic() - started < 4.5
    assert Alarm.objects.filter(environment=env(catalog, "staging"), state="OK").count() == 3
    assert Alarm.objects.get(environment=env(catalog, "dev")).state == "unknown"
    assert not Alarm.objects.filter(environment=env(catalog, "production")).exists()

    # Safe to run twice, here through a real RQ worker on the low queue.
    alertmanager.delay = 0
    import django_rq

    queue = django_rq.get_queue("low")
    queue.empty()  # other tests' notification jobs name rows that are gone
    job = queue.enqueue(poll_alarms)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    job.refresh()
    assert job.get_status() == "finished"
    # dev's placeholder is dropped (its source answers now); nothing else changed.
    assert job.return_value() == 0
    assert not Alarm.objects.filter(environment=env(catalog, "dev")).exists()
    # ...with its own history; staging's three stay.
    assert AlarmTransition.objects.count() == 3


def test_it_is_registered_every_30_seconds_on_the_low_queue():
    from django_rq import get_connection
    from rq.cron import CronScheduler

    scheduler = CronScheduler(connection=get_connection("low"))
    scheduler.load_config_from_file("deployments.cron")
    job = next(j for j in scheduler.get_jobs() if j.func is poll_alarms)
    assert (job.queue_name, job.interval, job.cron) == ("low", 30, None)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"cloudwatch": {"alarm_prefx": "x"}}, "cloudwatch.alarm_prefx: unknown key"),
        ({"cloudwatch": {}}, "cloudwatch.alarm_names: give alarm_names or alarm_prefix"),
        ({"duration_seconds": 60, "cloudwatch": {"alarm_prefix": "x"}}, "duration_seconds"),
        ({"alertmanager": {"matchers": ["a=b"]}}, "alertmanager.url: is required"),
        ({"alertmanager": {"url": "http://am", "matchers": ["severity=~crit("]}}, "bad regex"),
        ({"alertmanager": {"url": "http://am", "matchers": ["severity"]}}, "is not label=value"),
        (["cloudwatch"], "alarm_sources: must be an object"),
    ],
)
def test_it_validates_alarm_sources_like_a_bake(sources, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_alarm_sources(sources)


def test_it_accepts_no_sources_and_normalises_given_ones():
    assert validate_alarm_sources({}) == {}
    assert validate_alarm_sources({"cloudwatch": {"alarm_prefix": "fraud-"}}) == {
        "cloudwatch": {"alarm_names": [], "alarm_prefix": "fraud-"}
    }


# -- the admin checks alarm_sources like a bake step ------------------------------


@pytest.fixture
def change_url(catalog) -> str:
    return reverse("admin:environments_environment_change", args=[env(catalog, "staging").pk])


def post_sources(admin_client, change_url: str, sources) -> object:
    data = admin_form_data(admin_client.get(change_url))
    data["alarm_sources"] = json.dumps(sources)
    return admin_client.post(change_url, data)


def test_the_admin_refuses_bad_sources_naming_the_key(admin_client, change_url, catalog):
    sources = {"alertmanager": {"url": "http://alertmanager:9093", "matchers": ["severity=~("]}}
    response = post_sources(admin_client, change_url, sources)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["alarm_sources"]
    assert errors["alarm_sources"][0].startswith("alertmanager.matchers: 'severity=~(': bad regex")
    assert env(catalog, "staging").alarm_sources == {}
    assert not AuditEvent.objects.filter(action="admin.environment.changed").exists()


def test_the_admin_saves_good_sources_audited(admin_client, change_url, catalog):
    sources = {"cloudwatch": {"alarm_prefix": "fraud-detector-${environment}-"}}
    assert post_sources(admin_client, change_url, sources).status_code == 302
    assert env(catalog, "staging").alarm_sources == sources
    assert AuditEvent.objects.filter(action="admin.environment.changed").exists()


def test_the_demo_sources_are_valid():
    from deployments.demo import FRAUD_ALARMS, PLATFORM_ALARMS

    assert validate_alarm_sources(FRAUD_ALARMS)["cloudwatch"]["alarm_prefix"] == (
        "fraud-detector-${environment}-"
    )
    assert validate_alarm_sources(PLATFORM_ALARMS)["alertmanager"]["matchers"] == [
        "namespace=${var.namespace}", "severity=~critical|warning",
    ]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_demo_shows_the_sandbox_alarms_and_an_honest_unknown(monkeypatch):
    from django.core.management import call_command

    from deployments import demo, sandbox

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    # The demo's Alertmanager address, 9093, is held by any `make run` on this
    # machine: the seeded sources point at a port nothing listens on instead.
    silent = f"http://127.0.0.1:{closed_port()}"
    platform_alarms = {"alertmanager": {**demo.PLATFORM_ALARMS["alertmanager"], "url": silent}}
    monkeypatch.setattr(demo, "PLATFORM_ALARMS", platform_alarms)
    call_command("seed_demo", stdout=io.StringIO())
    # Only the alarms: moto keeps one state per process, shared by every
    # server in it, and the demo's other resources (fraud-detector-staging-…
    # target groups) would collide with the demo deployment test's.
    server, endpoint = sandbox.start_moto()
    try:
        sandbox.create_demo_alarms(endpoint, "staging")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        poll_alarms()
    finally:
        server.stop()
    fraud = Environment.objects.get(application__slug="fraud-detector", slug="staging")
    assert states(fraud) == {
        f"fraud-detector-staging-{suffix}": ("OK", "Sandbox start")
        for suffix in ("5xx", "latency", "4xx")
    }
    platform = Environment.objects.get(application__slug="fintech-ai-platform", slug="staging")
    [(name, (state, reason))] = states(platform).items()
    assert name == "alertmanager: namespace=${var.namespace}, severity=~critical|warning"
    assert state == "unknown"
    assert reason.startswith(f"Cannot read Alertmanager at {silent}")
