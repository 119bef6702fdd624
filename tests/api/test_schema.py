"""GET /api/v1/schema/"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from openapi_spec_validator import validate

URL = "/api/v1/schema/"

PATHS = [
    "/api/v1/applications/",
    "/api/v1/environments/{id}/",
    "/api/v1/environments/{id}/rollback/",
    "/api/v1/releases/",
    "/api/v1/releases/{id}/",
    "/api/v1/deployments/",
    "/api/v1/deployments/{id}/",
    "/api/v1/deployments/{id}/approve/",
    "/api/v1/deployments/{id}/reject/",
    "/api/v1/deployments/{id}/cancel/",
    "/api/v1/deployments/{id}/logs/",
    "/api/v1/audit-events/",
]


def test_it_serves_a_valid_openapi_document(api):
    response = api("dave").get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    document = response.json()
    validate(document)
    for path in PATHS:
        assert path in document["paths"], path
    releases = document["paths"]["/api/v1/releases/"]["post"]
    assert releases["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReleaseCreate"
    }
    assert set(releases["responses"]) == {"201", "400", "401", "403", "409"}
    approve = document["paths"]["/api/v1/deployments/{id}/approve/"]["post"]
    assert approve["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Deployment"
    }
    token_auth = document["components"]["securitySchemes"]["tokenAuth"]
    assert (token_auth["in"], token_auth["name"]) == ("header", "Authorization")


def test_it_serves_yaml_on_request(api):
    response = api("dave").get(URL, {"format": "yaml"})
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.0.3")


def test_it_generates_without_warnings(db):
    # --fail-on-warn turns any unresolved serializer or view into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())


@pytest.mark.django_db
def test_it_refuses_anonymous_callers(anonymous):
    assert anonymous.get(URL).status_code == 401


def test_it_refuses_other_methods(api):
    assert api("dave").post(URL, {}, format="json").status_code == 405
