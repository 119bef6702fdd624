"""The admin's sign-in page is throttled like every other sign-in path."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from portal.core.models import AuditEvent

PASSWORD = "correct-horse-battery"


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", PASSWORD)


def admin_sign_in(client, password: str):
    return client.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": password, "next": "/admin/"}
    )


def test_it_locks_out_after_five_wrong_superuser_passwords(client, root, settings):
    assert settings.LOGIN_MAX_FAILURES == 5
    answers = [admin_sign_in(client, f"guess-{n}").status_code for n in range(12)]
    # Four failures are answered with the form again; the fifth reaches the
    # limit, and every attempt after it is refused without a password check.
    assert answers[:4] == [200] * 4
    assert answers[5:] == [429] * 7
    response = admin_sign_in(client, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "Too many failed sign-in attempts" in response.content.decode()


def test_it_audits_the_lock_out_with_the_client_ip(client, root):
    for n in range(6):
        admin_sign_in(client, f"guess-{n}")
    event = AuditEvent.objects.filter(action="auth.locked_out").latest("seq")
    assert event.actor_name == "root"
    assert event.ip == "127.0.0.1"
    assert event.after["path"] == "/admin/login/"


def test_it_still_signs_the_superuser_in_with_the_right_password(client, root):
    response = admin_sign_in(client, PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(root.pk)
