"""Error pages: 404 and 403 inside the layout, 500 with the request id."""

from __future__ import annotations

from django.test import RequestFactory

from portal.views import server_error
from tests.environments.ui import browser


def test_404_uses_the_layout(users):
    response = browser(users["alice"]).get("/no-such-page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Not found" in html
    assert ">Sign out</button>" in html


def test_403_says_why(users, catalog):
    response = browser(users["dave"]).get("/apps/fraud-detector/releases/new/")
    assert response.status_code == 403
    assert "deployer role" in response.content.decode()


def test_500_shows_the_request_id(db):
    request = RequestFactory().get("/")
    request.id = "abcdef0123456789"
    response = server_error(request)
    assert response.status_code == 500
    assert 'data-testid="request-id">abcdef0123456789<' in response.content.decode()
