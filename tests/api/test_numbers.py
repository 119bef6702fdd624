"""No 5xx from numbers: every paginated endpoint caps `limit`, and an
out-of-range or malformed id, limit or offset is a 400 naming the parameter
(a path id that is merely unknown stays a 404)."""

from __future__ import annotations

import pytest

from portal.core.api_params import BIGINT_MAX, MAX_PAGE_SIZE
from tests.api.conftest import request_deployment
from tests.conftest import env

HUGE = "102865165055093247049728"  # from the report: PostgreSQL's "bigint out of range"
PAGINATED = [
    "/api/v1/audit-events/",
    "/api/v1/releases/",
    "/api/v1/deployments/",
    "/api/v1/environments/{env}/alarms/history/",
]


@pytest.fixture
def world(release, users, catalog) -> dict:
    deployment = request_deployment(release, users)
    return {"env": env(catalog, "staging").pk, "deployment": deployment.pk, "release": release.pk}


def get(api, path: str, world: dict):
    return api("erin").get(path.format(**world))


@pytest.mark.parametrize("path", PAGINATED)
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        (f"limit={HUGE}", "limit"),
        (f"limit={MAX_PAGE_SIZE + 1}", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=abc", "limit"),
        ("limit=²", "limit"),
        (f"offset={HUGE}", "offset"),
        (f"offset={BIGINT_MAX + 1}", "offset"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
    ],
)
def test_it_refuses_an_out_of_range_page_naming_it(api, world, path, query, parameter):
    response = get(api, f"{path}?{query}", world)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body[parameter] == [body["detail"].removeprefix(f"{parameter}: ")]
    assert "whole number" in body["detail"]


@pytest.mark.parametrize("path", PAGINATED)
def test_it_pages_within_the_cap(api, world, path):
    response = get(api, f"{path}?limit={MAX_PAGE_SIZE}&offset={BIGINT_MAX}", world)
    assert response.status_code == 200
    assert response.json()["results"] == []
    first = get(api, f"{path}?limit=1", world).json()
    assert len(first["results"]) <= 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/releases/{huge}/",
        "/api/v1/deployments/{huge}/",
        "/api/v1/deployments/{huge}/logs/",
        "/api/v1/deployments/{huge}/evidence/",
        "/api/v1/environments/{huge}/",
        "/api/v1/environments/{huge}/costs/",
        "/api/v1/environments/{huge}/alarms/",
        "/api/v1/environments/{huge}/alarms/history/",
    ],
)
def test_it_refuses_a_path_id_beyond_bigint_naming_it(api, world, path):
    response = get(api, path.replace("{huge}", HUGE), world)
    assert response.status_code == 400
    assert response.json()["id"] == [f"Give an id from 0 to {BIGINT_MAX}."]


@pytest.mark.parametrize("method", ["post"])
@pytest.mark.parametrize("action", ["approve", "reject", "cancel"])
def test_it_refuses_a_huge_id_in_a_post_path(api, world, method, action):
    response = getattr(api("bob"), method)(f"/api/v1/deployments/{HUGE}/{action}/", {},
                                           format="json")  # fmt: skip
    assert response.status_code == 400
    assert "id" in response.json()


def test_an_unknown_id_in_range_is_a_404(api, world):
    assert get(api, f"/api/v1/releases/{BIGINT_MAX}/", world).status_code == 404


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        (f"/api/v1/deployments/?release={HUGE}", "release"),
        (f"/api/v1/deployments/?environment={HUGE}", "environment"),
        ("/api/v1/deployments/?environment=-1", "environment"),
        ("/api/v1/deployments/?environment=²", "environment"),
        (f"/api/v1/audit-events/?environment={HUGE}", "environment"),
        ("/api/v1/audit-events/?environment=³", "environment"),
        ("/api/v1/deployments/{deployment}/logs/?after=" + HUGE, "after"),
        ("/api/v1/deployments/{deployment}/logs/?after=²", "after"),
        ("/api/v1/environments/{env}/costs/?days=" + HUGE, "days"),
    ],
)
def test_it_refuses_an_out_of_range_id_in_the_query_naming_it(api, world, query, parameter):
    response = get(api, query, world)
    assert response.status_code == 400
    assert parameter in response.json()


def test_it_takes_the_last_day_there_is(api, world):
    response = get(api, "/api/v1/audit-events/?until=9999-12-31&since=0001-01-01", world)
    assert response.status_code == 200
    assert response.json()["count"] >= 1


def test_the_schema_documents_the_bounds(api, world):
    schema = api("erin").get("/api/v1/schema/").json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/releases/"]["get"]["parameters"]}
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1,
                                             "maximum": MAX_PAGE_SIZE}  # fmt: skip
    assert parameters["offset"]["schema"]["maximum"] == BIGINT_MAX
