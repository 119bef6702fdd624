"""The readiness probe: PostgreSQL and Redis answer; 503 names what failed."""

from __future__ import annotations

from django.urls import reverse

REDIS_DOWN = "redis://:s3cret-password@127.0.0.1:1/0"  # nothing listens on port 1


def test_it_checks_the_database_and_redis(client, db):
    response = client.get(reverse("health-ready"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_it_is_503_naming_redis_when_it_is_unreachable(client, db, settings):
    settings.REDIS_URL = REDIS_DOWN
    response = client.get(reverse("health-ready"))
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"] == {"database": "ok", "redis": "unavailable"}
    # No secret and no address leaks out of the probe.
    assert "s3cret" not in response.content.decode()
    assert "127.0.0.1" not in response.content.decode()


def test_it_refuses_post(client, db):
    assert client.post(reverse("health-ready")).status_code == 405


def test_it_needs_no_sign_in_nor_https(client, db, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get(reverse("health-ready")).status_code == 200
