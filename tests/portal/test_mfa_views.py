"""Two-factor authentication of local accounts: enrolment with a QR code drawn
on the server, recovery codes, the second sign-in step, step-up, admin reset."""

from __future__ import annotations

import re
import time

import pytest
from django.urls import reverse

from portal.core import totp
from portal.core.models import AuditEvent, RecoveryCode, TotpDevice
from tests.environments.ui import browser, last_event
from tests.mfa import code_of, fresh_code

PASSWORD = "correct-horse-battery"


def enrol(client, user) -> list[str]:
    """Walk the setup page as a user does; returns the recovery codes shown."""
    assert client.get(reverse("mfa-setup")).status_code == 200
    device = TotpDevice.objects.get(user=user, confirmed=False)
    response = client.post(reverse("mfa-setup"), {"code": code_of(device)})
    assert response.status_code == 201, response.content
    return response.context["codes"]


@pytest.fixture
def enrolled(users) -> dict:
    """alice with an authenticator; her recovery codes."""
    codes = enrol(browser(users["alice"]), users["alice"])
    return {"user": users["alice"], "codes": codes}


def test_setup_shows_a_qr_code_drawn_here_and_the_secret(users):
    client = browser(users["alice"])
    response = client.get(reverse("mfa-setup"))
    page = response.content.decode()
    assert response["Cache-Control"] == "no-store"
    assert "<svg" in page and "<path" in page  # the QR code itself, inline
    assert not re.search(r'<img[^>]+src="https?://', page)  # nothing fetched from elsewhere
    device = TotpDevice.objects.get(user=users["alice"])
    assert not device.confirmed
    assert response.context["secret"] == totp.secret_base32(device)
    assert totp.provisioning_uri(device).startswith("otpauth://totp/Gantry%3Aalice?secret=")


def test_setup_stores_the_secret_encrypted(users):
    browser(users["alice"]).get(reverse("mfa-setup"))
    device = TotpDevice.objects.get(user=users["alice"])
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM portal_totpdevice WHERE id = %s", [device.pk])
        stored = cursor.fetchone()[0]
    assert device.key not in stored
    assert len(device.key) == 40


def test_setup_refuses_a_wrong_first_code(users):
    client = browser(users["alice"])
    client.get(reverse("mfa-setup"))
    response = client.post(reverse("mfa-setup"), {"code": "000000"})
    assert response.status_code == 400
    assert "does not match" in response.content.decode()
    assert not TotpDevice.objects.filter(user=users["alice"], confirmed=True).exists()
    assert last_event("auth.mfa_failed").actor_name == "alice"


def test_setup_confirms_shows_recovery_codes_once_and_audits(users):
    client = browser(users["alice"])
    codes = enrol(client, users["alice"])
    assert len(codes) == 10 and len(set(codes)) == 10
    assert TotpDevice.objects.get(user=users["alice"]).confirmed
    stored = list(RecoveryCode.objects.values_list("code_hash", flat=True))
    assert all(code not in stored for code in codes)
    event = last_event("auth.mfa_enrolled")
    assert event.after == {"method": "totp", "recovery_codes": 10}
    page = client.get(reverse("mfa-setup")).content.decode()
    assert "10 recovery codes left" in page
    assert codes[0] not in page


def test_sign_in_asks_for_the_code_after_the_password(client, enrolled):
    alice = enrolled["user"]
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa-verify")
    assert "_auth_user_id" not in client.session  # not signed in yet
    assert client.get(reverse("home")).status_code == 302
    response = client.post(reverse("mfa-verify"), {"code": fresh_code(alice)})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(alice.pk)
    assert client.session["gantry_authentication"]["method"] == "totp"
    assert last_event("auth.mfa_verified").after == {"method": "totp"}
    assert last_event("auth.signed_in").actor_id == alice.pk


def test_sign_in_refuses_a_wrong_code_and_throttles_the_device(client, enrolled):
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    response = client.post(reverse("mfa-verify"), {"code": "123456"})
    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    assert last_event("auth.mfa_failed").after == {"failures_in_a_row": 1}
    # Right after a failure the device waits a second: even the right code is refused.
    response = client.post(reverse("mfa-verify"), {"code": fresh_code(enrolled["user"])})
    assert response.status_code == 400
    assert "Wait" in response.content.decode()


def test_a_code_is_accepted_once(enrolled):
    alice = enrolled["user"]
    code = fresh_code(alice)
    assert totp.verify(alice, code) == "totp"
    assert totp.verify(alice, code) is None


def test_a_recovery_code_signs_in_once(client, enrolled):
    code = enrolled["codes"][3]
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    response = client.post(reverse("mfa-verify"), {"code": code.upper()})
    assert response.status_code == 302
    assert client.session["gantry_authentication"]["method"] == "recovery_code"
    assert totp.remaining_recovery_codes(enrolled["user"]) == 9
    client.post(reverse("logout"))
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert client.post(reverse("mfa-verify"), {"code": code}).status_code == 400


def test_the_second_step_expires(client, enrolled, monkeypatch):
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    session = client.session
    session["gantry_mfa_pending"]["at"] -= 301
    session.save()
    response = client.post(reverse("mfa-verify"), {"code": fresh_code(enrolled["user"])})
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_the_admin_sign_in_asks_for_the_code_too(client, db):
    from django.contrib.auth.models import User

    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    enrol(browser(root), root)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD, "next": "/admin/"}
    )
    assert response["Location"] == reverse("mfa-verify")
    assert client.get("/admin/").status_code == 302
    response = client.post(reverse("mfa-verify"), {"code": fresh_code(root)})
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_new_recovery_codes_need_a_current_code(enrolled):
    alice = enrolled["user"]
    client = browser(alice)
    response = client.post(reverse("mfa-recovery-codes"), {"code": "000000"})
    assert response.status_code == 302
    assert totp.remaining_recovery_codes(alice) == 10
    time.sleep(totp.seconds_locked(alice))  # a failure locks the device for a second
    response = client.post(reverse("mfa-recovery-codes"), {"code": fresh_code(alice)})
    assert response.status_code == 201
    new = response.context["codes"]
    assert set(new).isdisjoint(enrolled["codes"])
    assert totp.verify(alice, enrolled["codes"][0]) is None
    assert last_event("auth.mfa_recovery_codes_issued").actor_id == alice.pk


def test_an_admin_resets_a_lost_authenticator_and_it_is_audited(client, enrolled, db):
    from django.contrib.auth.models import User

    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client.force_login(root)
    alice = enrolled["user"]
    response = client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "reset_two_factor", "_selected_action": [alice.pk]},
    )
    assert response.status_code == 302
    assert not TotpDevice.objects.filter(user=alice).exists()
    assert not RecoveryCode.objects.filter(user=alice).exists()
    event = last_event("auth.mfa_reset")
    assert event.actor_name == "root"
    assert event.after == {"user": "alice", "devices": 1, "recovery_codes": 10}
    # alice signs in with her password alone now.
    response = client.post(reverse("logout"))
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response["Location"] == "/"


def test_pages_need_sign_in(client, db):
    assert client.get(reverse("mfa-setup")).status_code == 302
    response = client.get(reverse("mfa-verify"))
    assert response["Location"] == reverse("login")
    assert AuditEvent.objects.count() == 0
