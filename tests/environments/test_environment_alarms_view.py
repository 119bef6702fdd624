"""The Alarms section of an environment's page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from environments.models import Alarm, AlarmTransition, Environment
from portal.core.choices import Role
from tests.conftest import env, grant
from tests.environments.ui import browser

URL = reverse("environment-detail", args=["fraud-detector", "staging"])


def alarm(environment, name: str, state: str, reason: str, source: str = "cloudwatch") -> Alarm:
    now = timezone.now()
    row = Alarm.objects.create(
        environment=environment, source=source, name=name, state=state, reason=reason,
        since=now - timedelta(minutes=7), checked_at=now,
    )  # fmt: skip
    AlarmTransition.objects.create(
        alarm=row, environment=environment, from_state="OK" if state != "OK" else "",
        to_state=state, reason=reason, at=now - timedelta(minutes=7),
    )  # fmt: skip
    return row


def section(html: str) -> str:
    found = re.search(r'<section class="panel alarms" data-testid="alarms">(.*?)</section>', html,
                      re.S)  # fmt: skip
    assert found, "no Alarms section"
    return found.group(1)


def test_it_shows_each_alarm_with_its_state_problems_first(users, catalog):
    staging = env(catalog, "staging")
    alarm(staging, "fraud-detector-staging-4xx", "OK", "Threshold not crossed")
    alarm(staging, "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed: 42 5xx in 5 minutes")
    alarm(staging, "HighErrorRate", "unknown", "Cannot read Alertmanager: refused", "alertmanager")
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    html = section(response.content.decode())
    rows = re.findall(
        r'<tr data-alarm="([^"]+)">\s*<td><span class="badge badge-(\w+)">(\w+)<', html
    )
    assert rows == [
        ("fraud-detector-staging-5xx", "red", "ALARM"),
        ("HighErrorRate", "grey", "unknown"),
        ("fraud-detector-staging-4xx", "green", "OK"),
    ]
    assert "Threshold Crossed: 42 5xx in 5 minutes" in html
    assert "7\xa0minutes ago" in html
    assert "Alertmanager" in html


def test_it_says_when_the_sources_were_last_read(users, catalog):
    staging = env(catalog, "staging")
    alarm(staging, "fraud-detector-staging-5xx", "OK", "Threshold not crossed")
    html = section(browser(users["dave"]).get(URL).content.decode())
    assert "Last checked" not in html and "Polled every 30 seconds" in html
    # The poller writes the time once per environment, not on every alarm row.
    Environment.objects.filter(pk=staging.pk).update(
        alarms_checked_at=datetime(2026, 11, 16, 9, 30, 5, tzinfo=UTC)
    )
    html = section(browser(users["dave"]).get(URL).content.decode())
    assert "Last checked 2026-11-16 09:30:05 UTC. Polled every 30 seconds." in html


def test_it_shows_the_recent_changes(users, catalog):
    staging = env(catalog, "staging")
    alarm(staging, "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed")
    html = section(browser(users["dave"]).get(URL).content.decode())
    assert "Recent changes" in html
    assert re.search(
        r"fraud-detector-staging-5xx: OK →\s*<span class=\"badge badge-red\">ALARM", html
    )


def test_it_says_when_no_sources_are_set_or_nothing_was_polled_yet(users, catalog):
    html = section(browser(users["dave"]).get(URL).content.decode())
    assert "No alarm sources" in html
    staging = env(catalog, "staging")
    staging.alarm_sources = {"cloudwatch": {"alarm_prefix": "fraud-detector-staging-"}}
    staging.save()
    html = section(browser(users["dave"]).get(URL).content.decode())
    assert "No alarm reported yet" in html


def test_it_shows_only_this_environments_alarms(users, catalog):
    alarm(env(catalog, "production"), "fraud-detector-production-5xx", "ALARM", "prod fire")
    html = browser(users["dave"]).get(URL).content.decode()
    assert "fraud-detector-production-5xx" not in html


def test_it_sends_anonymous_visitors_to_sign_in(client, catalog):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_hides_the_environment_from_outsiders(users, catalog):
    alarm(env(catalog, "staging"), "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed")
    response = browser(users["mallory"]).get(URL)
    assert response.status_code == 404
    assert b"fraud-detector-staging-5xx" not in response.content


def test_it_hides_environments_where_the_user_has_no_role(users, catalog):
    grant(users["mallory"], env(catalog, "dev"), Role.VIEWER)
    alarm(env(catalog, "staging"), "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed")
    assert browser(users["mallory"]).get(URL).status_code == 404


def test_it_reads_the_alarms_in_constant_queries(users, catalog,
                                                         django_assert_num_queries):  # fmt: skip
    staging = env(catalog, "staging")
    client = browser(users["dave"])
    client.get(URL)
    with CaptureQueriesContext(connection) as empty:
        client.get(URL)
    for n in range(12):
        alarm(staging, f"fraud-detector-staging-{n}", "ALARM", "Threshold Crossed")
    with django_assert_num_queries(len(empty.captured_queries)):
        response = client.get(URL)
    assert response.content.decode().count('<tr data-alarm="') == 12
