"""GET|POST /api/v1/releases/"""

from __future__ import annotations

import pytest

from deployments.models import Artifact, Release
from environments.models import Application, Environment, Service
from portal.core.models import AuditEvent
from tests.api.conftest import last_event
from tests.conftest import grant, image

URL = "/api/v1/releases/"
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def payload(**overrides) -> dict:
    body = {
        "application": "fraud-detector",
        "version": "1.5.0",
        "artifacts": {s: image(s, "b") for s in SERVICES},
        "notes": "Retrained model",
        "commit": "9e1d7c4",
    }
    body.update(overrides)
    return body


def test_it_registers_a_release(api, catalog):
    response = api("alice").post(URL, payload(), format="json")
    assert response.status_code == 201
    body = response.json()
    release = Release.objects.get(pk=body["id"])
    assert body["application"] == "fraud-detector"
    assert body["version"] == "1.5.0"
    assert body["artifacts"] == {s: image(s, "b") for s in SERVICES}
    assert body["notes"] == "Retrained model"
    assert body["commit"] == "9e1d7c4"
    assert body["created_by"] == "alice"
    assert body["created_at"]
    assert release.created_by.username == "alice"
    assert release.artifact_map() == body["artifacts"]
    event = last_event("release.registered")
    assert event.actor_name == "alice"
    assert event.target_id == str(release.pk)
    assert event.after["version"] == "1.5.0"


def test_it_refuses_a_duplicate_version_with_409(api, release):
    client = api("alice")
    before = AuditEvent.objects.count()
    response = client.post(URL, payload(version="1.4.0"), format="json")
    assert response.status_code == 409
    assert "already registered" in response.json()["version"][0]
    assert Release.objects.count() == 1
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"artifacts": {**{s: image(s) for s in SERVICES}, "fraud-ml": "fraud-ml:latest"}},
         "artifacts.fraud-ml"),
        ({"artifacts": {"fraud-api": image("fraud-api")}}, "artifacts"),
        ({"artifacts": {**{s: image(s) for s in SERVICES}, "ledger": image("ledger")}},
         "artifacts"),
        ({"artifacts": ["not", "a", "map"]}, "artifacts"),
        ({"artifacts": {**{s: image(s) for s in SERVICES}, "fraud-ml": 42}}, "artifacts.fraud-ml"),
        ({"version": "not a version!"}, "version"),
        ({"version": ""}, "version"),
        ({"commit": "xyz"}, "commit"),
        ({"application": "no-such-app"}, "application"),
    ],
)  # fmt: skip
def test_it_names_the_field_of_bad_input_and_writes_nothing(api, catalog, overrides, field):
    client = api("alice")
    before = AuditEvent.objects.count()
    response = client.post(URL, payload(**overrides), format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Release.objects.exists()
    assert not Artifact.objects.exists()
    assert AuditEvent.objects.count() == before


def test_it_names_missing_fields(api, catalog):
    response = api("alice").post(URL, {}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"application", "version", "artifacts", "detail", "request_id"}
    assert body["detail"] == "application: This field is required."


def test_it_refuses_a_viewer_with_403(api, catalog):
    response = api("dave").post(URL, payload(), format="json")
    assert response.status_code == 403
    assert "deployer role" in response.json()["detail"]
    assert not Release.objects.exists()


def test_it_treats_an_invisible_application_as_unknown(api, catalog):
    response = api("mallory").post(URL, payload(), format="json")
    assert response.status_code == 400
    assert response.json() == {
        "application": ["No application 'fraud-detector'."],
        "detail": "application: No application 'fraud-detector'.",
        "request_id": response["X-Request-ID"],
    }


def test_it_lists_releases_the_user_may_see(api, release, users):
    other = Application.objects.create(slug="ledger", name="Ledger")
    Service.objects.create(application=other, slug="api", name="api")
    grant(users["alice"], Environment.objects.create(application=other, slug="dev", name="Dev",
                                                     order=1), "deployer")  # fmt: skip
    Release.register(other, "2.0.0", {"api": image("api")}, users["alice"])
    body = api("dave").get(URL).json()
    assert body["count"] == 1
    [listed] = body["results"]
    assert listed["id"] == release.pk
    assert listed["artifacts"] == release.artifact_map()
    alice = api("alice")
    assert alice.get(URL).json()["count"] == 2
    filtered = alice.get(URL, {"application": "ledger"}).json()
    assert [r["version"] for r in filtered["results"]] == ["2.0.0"]


def test_it_names_a_bad_filter(api, release):
    response = api("dave").get(URL, {"application": "fraud\x00"})
    assert response.status_code == 400
    assert "application" in response.json()


def test_it_paginates(api, catalog, users):
    for n in range(3):
        Release.register(catalog, f"1.0.{n}", {s: image(s) for s in SERVICES}, users["alice"])
    body = api("dave").get(URL, {"limit": 2}).json()
    assert body["count"] == 3
    assert [r["version"] for r in body["results"]] == ["1.0.2", "1.0.1"]
    assert "offset=2" in body["next"]


def test_it_hides_everything_from_outsiders(api, release):
    assert api("mallory").get(URL).json()["count"] == 0


def test_it_refuses_anonymous_callers(anonymous, catalog):
    assert anonymous.get(URL).status_code == 401
    assert anonymous.post(URL, payload(), format="json").status_code == 401
    assert not Release.objects.exists()


def test_it_refuses_other_methods(api, release):
    assert api("alice").delete(URL).status_code == 405
    assert api("alice").put(URL, payload(), format="json").status_code == 405
