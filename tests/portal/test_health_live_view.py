"""The liveness probe: no sign-in, plain JSON."""

from __future__ import annotations

from django.urls import reverse


def test_it_says_ok(client):
    response = client.get(reverse("health-live"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_refuses_post(client):
    assert client.post(reverse("health-live")).status_code == 405


def test_it_needs_no_sign_in_nor_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get(reverse("health-live")).status_code == 200
