"""GET /api/v1/releases/<id>/"""

from __future__ import annotations

from deployments.models import Release


def url(release) -> str:
    return f"/api/v1/releases/{release.pk}/"


def test_it_shows_a_release(api, release):
    response = api("dave").get(url(release))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == release.pk
    assert body["application"] == "fraud-detector"
    assert body["version"] == "1.4.0"
    assert body["artifacts"] == release.artifact_map()
    assert body["notes"] == "Bedrock timeout raised to 5 s"
    assert body["commit"] == "3f9c2ab"
    assert body["created_by"] == "alice"


def test_it_hides_a_release_from_outsiders(api, release):
    assert api("mallory").get(url(release)).status_code == 404


def test_it_refuses_anonymous_callers(anonymous, release):
    assert anonymous.get(url(release)).status_code == 401


def test_it_refuses_changes_because_releases_are_immutable(api, release):
    client = api("erin")
    assert client.patch(url(release), {"version": "9"}, format="json").status_code == 405
    assert client.delete(url(release)).status_code == 405
    assert Release.objects.get(pk=release.pk).version == "1.4.0"
