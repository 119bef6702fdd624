"""GET /api/v1/environments/<id>/alarms/ and …/alarms/history/"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from environments.models import Alarm, AlarmTransition
from portal.core.choices import Role
from tests.conftest import env, grant


def url(environment, history: bool = False) -> str:
    return f"/api/v1/environments/{environment.pk}/alarms/" + ("history/" if history else "")


def alarm(environment, name: str, state: str, reason: str, minutes_ago: int = 5) -> Alarm:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    row = Alarm.objects.create(
        environment=environment, source="cloudwatch", name=name, state=state, reason=reason,
        since=at, checked_at=timezone.now(),
    )  # fmt: skip
    first_seen = at - timedelta(hours=1)
    AlarmTransition.objects.create(
        alarm=row, environment=environment, to_state="OK", reason="first seen", at=first_seen
    )
    if state != "OK":
        AlarmTransition.objects.create(
            alarm=row, environment=environment, from_state="OK", to_state=state, reason=reason,
            at=at,
        )  # fmt: skip
    return row


def test_it_lists_the_alarm_states(api, catalog):
    staging = env(catalog, "staging")
    fired = alarm(staging, "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed: 42 5xx")
    alarm(staging, "fraud-detector-staging-latency", "OK", "Threshold not crossed")
    alarm(env(catalog, "production"), "fraud-detector-production-5xx", "OK", "fine")

    response = api("dave").get(url(staging))
    assert response.status_code == 200
    body = response.json()
    assert [a["name"] for a in body] == [
        "fraud-detector-staging-5xx", "fraud-detector-staging-latency",
    ]  # fmt: skip
    assert body[0] == {
        "name": "fraud-detector-staging-5xx",
        "source": "cloudwatch",
        "state": "ALARM",
        "since": fired.since.isoformat().replace("+00:00", "Z"),
        "reason": "Threshold Crossed: 42 5xx",
    }


def test_it_lists_the_history_newest_first(api, catalog):
    staging = env(catalog, "staging")
    alarm(staging, "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed: 42 5xx")
    body = api("dave").get(url(staging, history=True)).json()
    assert body["count"] == 2
    assert [(t["alarm"], t["from_state"], t["to_state"]) for t in body["results"]] == [
        ("fraud-detector-staging-5xx", "OK", "ALARM"),
        ("fraud-detector-staging-5xx", "", "OK"),
    ]
    assert body["results"][0]["source"] == "cloudwatch"


def test_it_shows_an_empty_list_before_the_first_poll(api, catalog):
    assert api("alice").get(url(env(catalog, "dev"))).json() == []


def test_it_refuses_anonymous_callers(anonymous, catalog):
    staging = env(catalog, "staging")
    assert anonymous.get(url(staging)).status_code == 401
    assert anonymous.get(url(staging, history=True)).status_code == 401


def test_it_hides_environments_from_outsiders(api, catalog):
    staging = env(catalog, "staging")
    alarm(staging, "fraud-detector-staging-5xx", "ALARM", "Threshold Crossed")
    for path in (url(staging), url(staging, history=True)):
        response = api("mallory").get(path)
        assert response.status_code == 404
        assert "fraud-detector-staging-5xx" not in response.content.decode()


def test_it_hides_environments_where_the_user_has_no_role(api, catalog, users):
    """A role in dev says nothing about production."""
    grant(users["mallory"], env(catalog, "dev"), Role.VIEWER)
    assert api("mallory").get(url(env(catalog, "dev"))).status_code == 200
    assert api("mallory").get(url(env(catalog, "production"))).status_code == 404


def test_it_refuses_other_methods(api, catalog):
    staging = env(catalog, "staging")
    assert api("erin").post(url(staging), {}, format="json").status_code == 405
    assert api("erin").delete(url(staging)).status_code == 405


def test_it_is_described_in_the_openapi_schema(api):
    document = api("dave").get("/api/v1/schema/").json()
    listing = document["paths"]["/api/v1/environments/{id}/alarms/"]["get"]
    schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"type": "array", "items": {"$ref": "#/components/schemas/Alarm"}}
    fields = document["components"]["schemas"]["Alarm"]["properties"]
    assert sorted(fields) == ["name", "reason", "since", "source", "state"]
    assert "/api/v1/environments/{id}/alarms/history/" in document["paths"]
