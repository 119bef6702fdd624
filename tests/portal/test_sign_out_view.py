"""Sign-out: POST only, audited."""

from __future__ import annotations

from django.urls import reverse

from tests.environments.ui import last_event


def test_it_signs_out_and_audits_it(client, users):
    client.force_login(users["alice"])
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session
    assert last_event("auth.signed_out").actor_id == users["alice"].pk


def test_it_refuses_get(client, users):
    client.force_login(users["alice"])
    assert client.get(reverse("logout")).status_code == 405
    assert client.session["_auth_user_id"] == str(users["alice"].pk)


def test_it_is_harmless_when_anonymous(client, db):
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert last_event("auth.signed_out") is None


def test_the_top_bar_has_a_sign_out_button(client, users, catalog):
    client.force_login(users["alice"])
    html = client.get(reverse("home")).content.decode()
    assert f'action="{reverse("logout")}"' in html
    assert ">Sign out</button>" in html
