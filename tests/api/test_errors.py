"""Every error under /api/v1/ is JSON {"detail", "request_id"} with the right
status, never the HTML page: unexpected exceptions, unknown API URLs, wrong
methods, CSRF failures of session-authenticated calls, errors raised outside
a view. An expected 403 is logged as one line, not a traceback."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from rest_framework.test import APIClient

from portal import api as portal_api
from tests.environments.ui import browser


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["detail"]
    assert body["request_id"] == response["X-Request-ID"]
    return body


@pytest.mark.parametrize("path", ["/api/v1/no-such-thing/", "/api/v1/releases/abc/", "/api/v2/"])
def test_it_answers_an_unknown_api_url_with_json(api, path):
    body = assert_json_error(api("alice").get(path), 404)
    assert path in body["detail"]


def test_it_answers_an_unknown_api_url_with_json_when_anonymous(anonymous):
    assert_json_error(anonymous.get("/api/v1/no-such-thing/"), 404)


def test_an_unknown_api_url_is_json_with_debug_on_too(api, settings):
    settings.DEBUG = True  # Django would answer its HTML debug page
    assert_json_error(api("alice").get("/api/v1/no-such-thing/"), 404)
    assert_json_error(api("alice").post("/api/v1/no-such-thing/", {}), 404)  # no CSRF check


def test_it_points_at_the_slash_a_url_is_missing(api):
    body = assert_json_error(api("alice").get("/api/v1/releases"), 404)
    assert body["detail"] == "No API endpoint at /api/v1/releases. Did you mean /api/v1/releases/ ?"


def test_pages_keep_their_html_404(users):
    response = browser(users["alice"]).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_it_answers_a_wrong_method_with_json(api, catalog):
    body = assert_json_error(api("alice").put("/api/v1/releases/", {}, format="json"), 405)
    assert "PUT" in body["detail"]


def test_it_answers_an_unexpected_exception_with_json_and_logs_it(api, catalog, monkeypatch,
                                                                  caplog):  # fmt: skip
    def broken(self):
        raise RuntimeError("the audit table went away")

    monkeypatch.setattr(portal_api.AuditEventList, "get_queryset", broken)
    with caplog.at_level(logging.ERROR, logger="portal.api_errors"):
        response = api("dave").get("/api/v1/audit-events/")
    body = assert_json_error(response, 500)
    assert set(body) == {"detail", "request_id"}
    assert "request id" in body["detail"]
    assert "went away" not in body["detail"]  # the detail of our fault stays in the log
    [record] = [r for r in caplog.records if r.name == "portal.api_errors"]
    assert body["request_id"] in record.getMessage()
    assert record.exc_info and "went away" in str(record.exc_info[1])


def test_it_answers_a_csrf_failure_of_a_session_call_with_json(users, catalog):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    response = client.post("/api/v1/releases/", {}, format="json")
    body = assert_json_error(response, 403)
    assert "CSRF" in body["detail"]


def test_it_answers_an_error_outside_a_view_with_json(users, settings):
    # A middleware that fails (e.g. a database gone between requests) on an API path.
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.api.failing_middleware.Fail"]
    client = Client(raise_request_exception=False)
    client.force_login(users["alice"])
    body = assert_json_error(client.get("/api/v1/applications/"), 500)
    assert set(body) == {"detail", "request_id"}
    page = client.get("/apps/")
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")


def test_an_expected_403_is_logged_as_one_line(users, catalog, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = browser(users["dave"]).get("/apps/fraud-detector/releases/new/")
    assert response.status_code == 403
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is None
    assert record.getMessage().startswith("Forbidden (Permission denied): /apps/fraud-detector/")
    assert "deployer role" in record.getMessage()  # the reason, on the same line
    assert "\n" not in record.getMessage()


def test_an_api_403_is_json_and_one_line(api, catalog, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = api("dave").post("/api/v1/cost-estimates/?region=ca-central-1", {},
                                    format="json")  # fmt: skip
    assert "pricing plans" in assert_json_error(response, 403)["detail"].lower()
    assert all(r.exc_info is None for r in caplog.records)
