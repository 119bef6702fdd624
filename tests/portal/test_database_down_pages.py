"""With PostgreSQL not answering, a request waits DB_POOL_TIMEOUT for a pooled
connection, then answers 503 naming the database, never a 500, whether the
first query was in a view, in DRF's authentication or in a middleware."""

from __future__ import annotations

import copy
import socket
import time
from contextlib import contextmanager

import pytest
from django.db import connections
from django.urls import reverse

from portal.core import tokens

pytestmark = pytest.mark.django_db(transaction=True)
WAIT_SECONDS = 1


@contextmanager
def refused():
    """The default database at a port nothing listens on; its pool waits 1 s."""
    default = connections["default"]
    saved = copy.deepcopy(default.settings_dict)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    default.close()
    default.close_pool()
    default.settings_dict["PORT"] = str(port)
    default.settings_dict["OPTIONS"]["pool"] = {
        **default.settings_dict["OPTIONS"]["pool"], "min_size": 0, "timeout": WAIT_SECONDS
    }  # fmt: skip
    try:
        yield
    finally:
        default.close()
        default.close_pool()
        default.settings_dict.clear()
        default.settings_dict.update(saved)


@pytest.fixture
def database_refused():
    with refused():
        yield


def timed(request):
    started = time.monotonic()
    response = request()
    return response, time.monotonic() - started


def test_signing_in_says_the_database_is_down(client, users, database_refused):
    form = {"username": "alice", "password": "correct-horse-battery"}
    response, took = timed(lambda: client.post(reverse("login"), form))

    assert response.status_code == 503
    page = response.content.decode()
    assert "The database did not give this request a connection in time" in page
    assert "Nothing was requested or changed" in page
    assert WAIT_SECONDS <= took < WAIT_SECONDS + 5


def test_a_signed_in_page_says_so_when_the_session_needs_the_database(client, users):
    client.force_login(users["alice"])
    # Met in a middleware (the session's user), it reaches handler500: the
    # test client would re-raise it, where a server sends the response.
    client.raise_request_exception = False
    with refused():
        response = client.get("/")

    assert response.status_code == 503
    assert "The database did not give this request a connection" in response.content.decode()


def test_an_api_call_says_so_in_json(client, users, database_refused):
    response = client.get("/api/v1/deployments/", HTTP_AUTHORIZATION="Bearer not-a-real-token")

    assert response.status_code == 503
    body = response.json()
    assert "The database did not give this request a connection" in body["detail"]
    assert body["request_id"]


def test_down_back_down_back_each_request_answers_for_the_moment(client, users):
    """Outages come and go: the pool is made afresh each time the database
    moves, and no answer is one left over from the last state."""
    _, key = tokens.issue(users["alice"], "ci")

    def status() -> int:
        return client.get("/api/v1/deployments/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code

    assert status() == 200
    for _ in range(2):
        with refused():
            assert [status(), status()] == [503, 503]
        assert [status(), status()] == [200, 200]
