"""The sign-in page: Django auth, audited, throttled per username and per IP
(django-axes, counters in Redis)."""

from __future__ import annotations

import time
from datetime import timedelta

import redis
from django.conf import settings
from django.urls import reverse

from portal.core.models import AuditEvent
from tests.environments.ui import last_event

PASSWORD = "correct-horse-battery"


def sign_in(client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_it_shows_the_form(client, db):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content
    assert b">Sign in</button>" in response.content


def test_it_signs_in_and_audits_it(client, users):
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(users["alice"].pk)
    event = last_event("auth.signed_in")
    assert event.actor_id == users["alice"].pk
    assert event.request_id == response["X-Request-ID"]
    assert event.ip == "127.0.0.1"


def test_it_follows_next_to_a_local_page(client, users):
    response = client.post(
        reverse("login") + "?next=/deployments/",
        {"username": "alice", "password": PASSWORD, "next": "/deployments/"},
    )
    assert response["Location"] == "/deployments/"


def test_it_refuses_a_wrong_password_and_audits_it(client, users):
    response = sign_in(client, "alice", "wrong")
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert "correct username and password" in response.content.decode()
    event = last_event("auth.sign_in_failed")
    assert event.actor_name == "alice"
    assert event.actor_id is None


def test_it_refuses_the_right_password_after_too_many_failures(client, users, settings):
    assert settings.LOGIN_MAX_FAILURES == 5
    for _ in range(4):
        assert sign_in(client, "alice", "wrong").status_code == 200
    assert sign_in(client, "alice", "wrong").status_code == 429  # the fifth locks
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session
    text = response.content.decode()
    assert "Too many failed sign-in attempts" in text
    assert "Try again in 15 minutes" in text
    assert not AuditEvent.objects.filter(action="auth.signed_in").exists()
    locked = AuditEvent.objects.filter(action="auth.locked_out").order_by("seq")
    assert [e.actor_name for e in locked] == ["alice", "alice"]
    assert locked.last().after["path"] == "/login/"
    assert AuditEvent.objects.filter(action="auth.sign_in_failed").count() == 4


def test_it_counts_a_user_name_whatever_its_case(client, users):
    for name in ("alice", "Alice", "ALICE", " alice", "aLice"):
        sign_in(client, name, "wrong")
    assert sign_in(client, "alice", PASSWORD).status_code == 429


def test_it_locks_the_client_ip_across_usernames(client, users):
    for name in ("bob", "carol", "dave", "nobody", "bob"):
        sign_in(client, name, "wrong")
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_locks_a_user_name_across_addresses(client, users):
    for n in range(5):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"},
                    REMOTE_ADDR=f"192.0.2.{n + 1}")  # fmt: skip
    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="192.0.2.50"
    )
    assert response.status_code == 429


def test_a_success_forgets_the_username_failures(client, users):
    for _ in range(3):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", PASSWORD).status_code == 302
    client.post(reverse("logout"))
    for _ in range(4):
        assert sign_in(client, "alice", "wrong").status_code == 200


def test_it_lets_people_try_again_after_the_window(client, users, settings):
    # Long enough that six sign-ins fit in it on a loaded CI machine.
    settings.AXES_COOLOFF_TIME = timedelta(seconds=3)
    for _ in range(5):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", PASSWORD).status_code == 429
    # Each refused attempt starts the wait again: wait for the counters to expire
    # (however late a loaded machine made the last attempt), then try.
    deadline = time.monotonic() + 30
    while failure_counters() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sign_in(client, "alice", PASSWORD).status_code == 302


def failure_counters() -> list[bytes]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    return list(client.scan_iter(match="*:axes-*"))


def test_it_refuses_other_methods(client, db):
    assert client.delete(reverse("login")).status_code == 405


def test_it_sends_a_signed_in_user_home(client, users):
    client.force_login(users["alice"])
    assert client.get(reverse("login"))["Location"] == "/"


def test_pages_send_anonymous_users_to_sign_in(client, db):
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login") + "?next=/"
