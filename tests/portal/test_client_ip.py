"""The client address behind a reverse proxy: counted from the right of
X-Forwarded-For (TRUSTED_PROXY_COUNT hops), so a client cannot choose it."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse

from portal.core.middleware import client_ip
from portal.core.models import AuditEvent

PASSWORD = "correct-horse-battery"
PROXY = "10.0.0.2"  # the reverse proxy: REMOTE_ADDR of every request
CLIENT = "198.51.100.7"  # what the proxy appends: the address it saw


@pytest.fixture
def behind_one_proxy(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # BEHIND_PROXY=1
    settings.TRUSTED_PROXY_COUNT = 1


def forwarded(forged: str) -> dict:
    """Headers as our proxy passes them on: the client's own X-Forwarded-For
    (forged) with the address the proxy saw appended."""
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": f"{forged}, {CLIENT}"}


def test_a_forged_forwarded_for_cannot_beat_the_per_ip_limit(client, users, behind_one_proxy):
    # Five usernames, five forged addresses: one client all the same.
    for n, name in enumerate(("bob", "carol", "dave", "erin", "mallory")):
        response = client.post(reverse("login"), {"username": name, "password": "wrong"},
                               **forwarded(f"203.0.113.{n + 1}"))  # fmt: skip
        assert response.status_code in (200, 429)
    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD}, **forwarded("203.0.113.99")
    )
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_audit_trail_records_the_address_the_proxy_saw(client, users, behind_one_proxy):
    client.post(reverse("login"), {"username": "alice", "password": "wrong"},
                **forwarded("203.0.113.66"))  # fmt: skip
    event = AuditEvent.objects.filter(action="auth.sign_in_failed").latest("seq")
    assert event.ip == CLIENT


@pytest.mark.parametrize(
    ("count", "header", "expected"),
    [
        (0, "203.0.113.66, 198.51.100.7", PROXY),  # no proxy trusted: the socket
        (1, "203.0.113.66, 198.51.100.7", "198.51.100.7"),
        (2, "203.0.113.66, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
        (1, "", PROXY),  # the proxy sent no header: the socket address
        (2, "198.51.100.7", PROXY),  # fewer hops than trusted: not to be believed
        (1, "not-an-address", PROXY),
    ],
)
def test_it_counts_hops_from_the_right(settings, count, header, expected):
    settings.TRUSTED_PROXY_COUNT = count
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=header)
    assert client_ip(request) == expected
