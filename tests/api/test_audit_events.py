"""GET /api/v1/audit-events/"""

from __future__ import annotations

import pytest

from portal.core.models import AuditEvent
from tests.api.conftest import request_deployment
from tests.conftest import env

URL = "/api/v1/audit-events/"


def test_it_lists_events_newest_first_with_the_chain_fields(api, release, users):
    deployment = request_deployment(release, users)
    body = api("dave").get(URL).json()
    latest = AuditEvent.objects.filter(action="deployment.requested").get()
    event = next(e for e in body["results"] if e["action"] == "deployment.requested")
    assert event["seq"] == latest.seq
    assert event["target_type"] == "deployments.deployment"
    assert event["target_id"] == str(deployment.pk)
    assert event["target"] == str(deployment)
    assert event["application"] == "fraud-detector"
    assert event["environment"] == {"id": deployment.environment_id, "slug": "staging"}
    assert event["after"]["reason"] == "hotfix"
    assert event["hash"] == latest.hash
    assert event["prev_hash"] == latest.prev_hash
    assert set(event) >= {"at", "actor", "before", "ip", "request_id"}
    seqs = [e["seq"] for e in body["results"]]
    assert seqs == sorted(seqs, reverse=True)


def test_it_filters_like_the_audit_page(api, release, users):
    request_deployment(release, users, slug="dev")
    request_deployment(release, users, slug="staging")
    client = api("dave")
    staging = env(release.application, "staging")
    body = client.get(URL, {"environment": staging.pk, "action": "deployment.requested"}).json()
    assert body["count"] == 1
    assert body["results"][0]["environment"]["slug"] == "staging"
    body = client.get(URL, {"action": "release.registered", "application": "fraud-detector"})
    assert body.json()["count"] == 1
    assert client.get(URL, {"since": "2999-01-01"}).json()["count"] == 0
    # The same prefix and case rules as the page.
    assert client.get(URL, {"action": "deployment."}).json()["count"] == 2
    assert client.get(URL, {"actor": "ALICE", "action": "release."}).json()["count"] == 1


def test_it_names_the_actor_of_api_calls(api, release):
    client = api("alice")
    client.post(
        "/api/v1/deployments/",
        {"release": release.pk, "environment": env(release.application, "dev").pk, "reason": "x"},
        format="json",
    )
    body = client.get(URL, {"actor": "alice", "action": "deployment.requested"}).json()
    assert body["count"] == 1
    assert body["results"][0]["actor"] == "alice"
    assert body["results"][0]["ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("params", "name"),
    [({"since": "yesterday"}, "since"), ({"environment": "prod"}, "environment"),
     ({"since": "2026-02-01", "until": "2026-01-01"}, "until"), ({"actor": "a\x00"}, "actor")],
)  # fmt: skip
def test_it_names_a_bad_filter(api, catalog, params, name):
    response = api("dave").get(URL, params)
    assert response.status_code == 400
    assert name in response.json()


def test_it_paginates(api, release, users):
    for slug in ("dev", "staging"):
        request_deployment(release, users, slug=slug)
    body = api("dave").get(URL, {"limit": 1}).json()
    assert len(body["results"]) == 1
    assert body["count"] > 1
    assert "offset=1" in body["next"]


def test_it_hides_other_peoples_events_from_outsiders(api, release, users):
    request_deployment(release, users)
    assert AuditEvent.objects.filter(application__slug="fraud-detector").exists()
    body = api("mallory").get(URL).json()
    assert body["results"] == []


def test_it_refuses_anonymous_callers(anonymous, catalog):
    assert anonymous.get(URL).status_code == 401


def test_it_refuses_writes_because_the_trail_is_append_only(api, catalog):
    client = api("erin")
    count = AuditEvent.objects.count()
    assert client.post(URL, {"action": "x"}, format="json").status_code == 405
    assert AuditEvent.objects.count() == count
