"""GET /api/v1/docs/: the API reference (Swagger UI), every asset served by
the portal itself (air-gapped), linked from the Tokens page."""

from __future__ import annotations

import re

from django.contrib.staticfiles import finders
from django.test import Client

from tests.environments.ui import browser

URL = "/api/v1/docs/"


def test_it_shows_swagger_ui_over_the_schema(users):
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Gantry API reference" in html
    assert '"/api/v1/schema/"' in html  # what the page loads
    assert "SwaggerUIBundle" in html


def test_every_asset_is_local(users):
    html = browser(users["dave"]).get(URL).content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/static/"), asset  # no CDN, no other host
        assert finders.find(asset.removeprefix("/static/")), asset  # and the file is there
    assert "cdn" not in html.lower()


def test_it_sends_an_anonymous_visitor_to_sign_in(db):
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={URL}"


def test_it_is_linked_from_the_tokens_page(users):
    html = browser(users["alice"]).get("/tokens/").content.decode()
    assert f'href="{URL}" data-testid="api-docs-link"' in html


def test_it_is_left_out_of_the_schema(api):
    assert not any("docs" in path for path in api("dave").get("/api/v1/schema/").json()["paths"])


def test_the_schema_documents_the_shared_errors(api):
    document = api("dave").get("/api/v1/schema/").json()
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["detail", "request_id"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"401", "403"} <= set(responses), (method, path)
            if "{id}" in path:
                assert {"400", "404"} <= set(responses), (method, path)
            for code, response in responses.items():
                if code.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
