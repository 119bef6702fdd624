"""With Redis down, a page or endpoint that needs it answers 503 naming Redis,
never a 500 (sign-in counts attempts there; the API authenticates through
the same throttle)."""

from __future__ import annotations

import socket

import pytest
from asgiref.local import Local
from axes.handlers.proxy import AxesProxyHandler
from django.core.cache import caches
from django.urls import reverse

from portal.core import tokens


@pytest.fixture
def redis_refused(settings):
    """The cache (and so the sign-in throttle) at a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"},
    }
    caches._connections = Local(caches.thread_critical)
    AxesProxyHandler.get_implementation(force=True)  # it keeps the cache it was made with
    yield
    caches._connections = Local(caches.thread_critical)
    AxesProxyHandler.implementation = None  # made again, lazily, once settings are restored


def test_the_sign_in_page_says_redis_is_down(client, users, redis_refused):
    response = client.post(
        reverse("login"), {"username": "alice", "password": "correct-horse-battery"}
    )

    assert response.status_code == 503
    assert "Redis" in response.content.decode()
    assert "nothing was requested or changed" in response.content.decode()


def test_an_api_call_says_redis_is_down_in_json(client, users, redis_refused):
    _, key = tokens.issue(users["alice"], "ci")

    response = client.get("/api/v1/deployments/", HTTP_AUTHORIZATION=f"Bearer {key}")

    assert response.status_code == 503
    assert "Redis" in response.json()["detail"]
