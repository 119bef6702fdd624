"""GET /metrics: Gantry's state in Prometheus' text format, for METRICS_TOKEN
or a superuser's API token (as a bearer token); a 403 for anyone else. Every
figure is read from the database and Redis at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import django_rq
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient
from rq import Queue

from deployments.choices import Status, StepStatus
from deployments.logs import LogWriter
from deployments.models import Deployment, StepRun
from environments.choices import AlarmSource, AlarmState
from environments.models import Alarm
from portal.core import tokens
from portal.core.models import ChainVerification
from portal.core.observability import LOG_STORE_LATENCY
from tests.conftest import env
from tests.servers import ROOT

URL = "/metrics"
METRICS_TOKEN = "prometheus-scrapes-with-this-0123456789"


@pytest.fixture(autouse=True)
def _metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def scrape(authorization: str = f"Bearer {METRICS_TOKEN}") -> dict[str, list]:
    response = client_with(authorization).get(URL)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family.samples for family in families}


def value(samples: list, name: str, **labels: str) -> float:
    [found] = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


def test_it_serves_prometheus_with_the_metrics_token(db):
    families = scrape()
    for name in ("gantry_rq_jobs", "gantry_rq_workers", "gantry_deployments",
                 "gantry_step_duration_seconds", "gantry_alarms_unreadable",
                 "gantry_drift_detection_enabled"):  # fmt: skip
        assert name in families, name


def test_it_serves_a_superusers_api_token_as_bearer_or_token(root):
    _, key = tokens.issue(root, "prometheus")
    assert "gantry_deployments" in scrape(f"Bearer {key}")
    assert "gantry_deployments" in scrape(f"Token {key}")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {METRICS_TOKEN}x", "Basic cm9vdDpwdw==",
     f"Token {METRICS_TOKEN}"],
)  # fmt: skip
def test_it_refuses_anyone_else_with_403(db, authorization):
    response = client_with(authorization).get(URL)
    assert response.status_code == 403
    assert "gantry_" not in response.content.decode()


def test_it_refuses_an_admin_of_environments_who_is_no_superuser(users, catalog):
    _, key = tokens.issue(users["erin"], "prometheus")
    assert client_with(f"Bearer {key}").get(URL).status_code == 403


def test_without_a_metrics_token_the_empty_bearer_opens_nothing(db, settings):
    settings.METRICS_TOKEN = ""
    assert client_with("Bearer ").get(URL).status_code == 403
    assert client_with("Bearer").get(URL).status_code == 403


def test_it_speaks_openmetrics_when_asked(db):
    client = client_with(f"Bearer {METRICS_TOKEN}")
    response = client.get(URL, HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def test_it_refuses_other_methods(db):
    assert client_with(f"Bearer {METRICS_TOKEN}").post(URL).status_code == 405


def test_it_counts_deployments_by_status(release, users, catalog):
    Deployment.request(release, env(catalog, "staging"), users["alice"], "one")
    Deployment.request(release, env(catalog, "dev"), users["alice"], "two")
    samples = scrape()["gantry_deployments"]
    assert {s.labels["status"] for s in samples} == set(Status.values)
    by_status = {s.labels["status"]: s.value for s in samples}
    expected = {status: float(Deployment.objects.filter(status=status).count())
                for status in Status.values}  # fmt: skip
    assert by_status == expected
    assert sum(by_status.values()) == 2


def test_it_reports_queue_depths_per_queue(db, queues):
    # Straight to Redis: the portal's queues enqueue on commit, which this test never does.
    low = Queue("low", connection=django_rq.get_connection("low"))
    low.enqueue("portal.core.jobs.verify_audit_chain")
    low.enqueue("portal.core.jobs.verify_audit_chain")
    samples = scrape()["gantry_rq_jobs"]
    assert value(samples, "gantry_rq_jobs", queue="low", state="queued") == 2
    assert value(samples, "gantry_rq_jobs", queue="high", state="queued") == 0
    # Failed jobs stay in RQ's registry across tests: the metric is what RQ holds.
    failed = Queue("default", connection=django_rq.get_connection("default")).failed_job_registry
    assert value(samples, "gantry_rq_jobs", queue="default", state="failed") == failed.count


def test_it_reports_step_durations_by_kind(release, users, catalog):
    deployment = Deployment.request(release, env(catalog, "dev"), users["alice"], "steps")
    start = timezone.now() - timedelta(hours=1)
    for order, (seconds, status) in enumerate(
        [(3, StepStatus.SUCCEEDED), (100, StepStatus.FAILED), (7, StepStatus.RUNNING)], start=1
    ):
        StepRun.objects.create(deployment=deployment, order=order, name=f"s{order}",
                               kind="command", status=status, started_at=start,
                               finished_at=start + timedelta(seconds=seconds))  # fmt: skip
    samples = scrape()["gantry_step_duration_seconds"]
    bucket = "gantry_step_duration_seconds_bucket"
    assert value(samples, bucket, kind="command", le="1.0") == 0
    assert value(samples, bucket, kind="command", le="5.0") == 1
    assert value(samples, bucket, kind="command", le="120.0") == 2
    assert value(samples, bucket, kind="command", le="+Inf") == 2  # the running one is not done
    assert value(samples, "gantry_step_duration_seconds_count", kind="command") == 2
    assert value(samples, "gantry_step_duration_seconds_sum", kind="command") == 103


@pytest.mark.django_db(transaction=True)
def test_it_reports_the_print_to_stored_latency_of_log_lines(release, users, catalog):
    LOG_STORE_LATENCY.reset()
    assert "gantry_log_store_latency_seconds" not in scrape()  # nothing measured yet
    deployment = Deployment.request(release, env(catalog, "dev"), users["alice"], "logs")
    with LogWriter(deployment.pk) as writer:
        writer.write_lines([f"line {n}" for n in range(40)])
        writer.write("one more")
    samples = scrape()["gantry_log_store_latency_seconds"]
    assert value(samples, "gantry_log_store_latency_seconds_count") == 41
    assert value(samples, "gantry_log_store_latency_seconds_bucket", le="+Inf") == 41
    assert 0 < value(samples, "gantry_log_store_latency_seconds_sum") < 41 * 10
    LOG_STORE_LATENCY.reset()


def test_it_reports_the_last_audit_chain_verification(db):
    assert not [s for s in scrape()["gantry_audit_chain_ok"]]  # absent before the first check
    ChainVerification.objects.create(ok=True, finished_at=timezone.now(), events_checked=9,
                                     verified_through_seq=9)  # fmt: skip
    families = scrape()
    assert value(families["gantry_audit_chain_ok"], "gantry_audit_chain_ok") == 1
    assert value(families["gantry_audit_chain_verified_through_seq"],
                 "gantry_audit_chain_verified_through_seq") == 9  # fmt: skip
    ChainVerification.objects.create(ok=False, finished_at=timezone.now(), broken_seq=4,
                                     reason="event #4 does not match its signature")  # fmt: skip
    assert value(scrape()["gantry_audit_chain_ok"], "gantry_audit_chain_ok") == 0


def test_it_counts_unreadable_alarm_sources(catalog):
    staging = env(catalog, "staging")
    for name, state in [("a", AlarmState.UNKNOWN), ("b", AlarmState.UNKNOWN), ("c", AlarmState.OK)]:
        Alarm.objects.create(environment=staging, source=AlarmSource.CLOUDWATCH, name=name,
                             state=state, since=timezone.now(),
                             checked_at=timezone.now())  # fmt: skip
    samples = scrape()["gantry_alarms_unreadable"]
    assert value(samples, "gantry_alarms_unreadable", source="cloudwatch") == 2
    assert value(samples, "gantry_alarms_unreadable", source="alertmanager") == 0


def test_drift_reads_as_not_measured(db):
    samples = scrape()["gantry_drift_detection_enabled"]
    assert value(samples, "gantry_drift_detection_enabled") == 0


def test_a_scrape_costs_the_same_queries_whatever_the_history(
    release, users, catalog, django_assert_max_num_queries
):
    with django_assert_max_num_queries(6):
        scrape()
    for slug in ("dev", "staging"):
        Deployment.request(release, env(catalog, slug), users["alice"], "more history")
    with django_assert_max_num_queries(6):
        scrape()


def test_the_metrics_token_can_come_from_a_file(tmp_path):
    secret = tmp_path / "metrics_token"
    secret.write_text("from-a-secret-file\n")
    environ = {"SECRET_KEY": "k", "AUDIT_KEY": "a", "PATH": os.environ.get("PATH", ""),
               "METRICS_TOKEN_FILE": str(secret)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", "import portal.settings as s; "
                             "print(s.METRICS_TOKEN)"], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "from-a-secret-file", result.stderr
