"""The session and the signed-in user, read by prepared queries
(portal/core/sessions.py, portal/core/backends.py): every request gets what
Django's own database sessions and ModelBackend would give it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models.sql.compiler import SQLCompiler
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    rule,
)

from portal.core.backends import PasswordBackend, SsoBackend
from portal.core.sessions import SessionStore
from tests.strategies import run_machine

pytestmark = pytest.mark.django_db
User = get_user_model()


def test_the_portal_uses_the_prepared_store(settings):
    assert settings.SESSION_ENGINE == "portal.core.sessions"


def test_a_live_session_loads_in_one_query(django_assert_num_queries):
    store = SessionStore()
    store["answer"] = 42
    store.create()
    with django_assert_num_queries(1):
        assert SessionStore(store.session_key).load() == {"answer": 42}


def test_an_expired_session_is_empty_and_its_key_dropped():
    store = SessionStore()
    store["answer"] = 42
    store.create()
    Session.objects.filter(pk=store.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    reader = SessionStore(store.session_key)
    assert reader.load() == {}
    assert reader.session_key is None  # a new one is made if anything is stored


def test_an_unknown_or_invalid_key_is_an_empty_session(django_assert_num_queries):
    with django_assert_num_queries(1):
        assert SessionStore("x" * 32).load() == {}
    with django_assert_num_queries(0):  # too short: the setter refuses it, nothing to read
        assert SessionStore("short").load() == {}


def test_a_signed_in_page_and_an_expired_sign_in(client):
    user = User.objects.create_user("erin", password="pw-erin-1234")
    client.force_login(user)
    assert client.get(reverse("approvals-count")).status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get(reverse("approvals-count"))
    assert response.status_code in (302, 401, 403)  # signed out, not served


@pytest.mark.parametrize("backend_class", [PasswordBackend, SsoBackend])
def test_the_session_user_as_django_reads_it(backend_class, django_assert_num_queries):
    user = User.objects.create_user("frank", password="pw-frank-1234")
    backend = backend_class()
    with django_assert_num_queries(1):
        assert backend.get_user(user.pk) == user
    assert backend.get_user(user.pk + 1000) is None
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert backend.get_user(user.pk) is None  # a deactivated user is signed out
    # A value from elsewhere takes Django's own path, which converts it.
    User.objects.filter(pk=user.pk).update(is_active=True)
    assert backend.get_user(str(user.pk)) == user


def test_a_deactivated_user_is_signed_out_of_the_next_page(client):
    user = User.objects.create_user("gina", password="pw-gina-1234")
    client.force_login(user)
    assert client.get(reverse("approvals-count")).status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert client.get(reverse("approvals-count")).status_code in (302, 401, 403)


class Sessions(RuleBasedStateMachine):
    """Sessions created, changed, expired, revived, deleted, cycled and
    cleared in any order. A model of the table says what each key must load;
    the portal's store loads that, and so does Django's own."""

    keys = Bundle("keys")

    @initialize()
    def start(self):
        Session.objects.all().delete()
        self.rows: dict[str, dict] = {}  # key -> data, what the table holds
        self.expired: set[str] = set()

    def live(self, key: str) -> bool:
        return key in self.rows and key not in self.expired

    @rule(target=keys, value=st.integers(0, 9))
    def create(self, value):
        store = SessionStore()
        store["value"] = value
        store.create()
        self.rows[store.session_key] = {"value": value}
        return store.session_key

    @rule(target=keys, key=keys, value=st.integers(0, 9))
    def change(self, key, value):
        store = SessionStore(key)
        store["value"] = value
        store.save()
        if self.live(key):
            assert store.session_key == key
            self.rows[key] = {**self.rows[key], "value": value}
        else:  # gone or expired: the change starts a session of its own
            assert store.session_key != key
            self.rows[store.session_key] = {"value": value}
        return store.session_key

    @rule(key=keys, seconds=st.sampled_from([-3600, -1, 60, 3600]))
    def move_expiry(self, key, seconds):
        expiry = timezone.now() + timedelta(seconds=seconds)
        Session.objects.filter(pk=key).update(expire_date=expiry)
        if seconds < 0:
            self.expired.add(key)
        else:
            self.expired.discard(key)

    @rule(key=keys)
    def delete(self, key):
        SessionStore(key).delete()
        self.rows.pop(key, None)

    @rule(target=keys, key=keys)
    def cycle(self, key):
        store = SessionStore(key)
        store.load()
        store.cycle_key()
        data = self.rows.pop(key) if self.live(key) else {}
        self.rows[store.session_key] = data
        return store.session_key

    @rule()
    def clear_expired(self):
        SessionStore.clear_expired()
        for key in self.expired:
            self.rows.pop(key, None)

    @rule(key=keys)
    def load(self, key):
        expected = self.rows[key] if self.live(key) else {}
        ours, django = SessionStore(key), DjangoSessionStore(key)
        assert ours.load() == expected == django.load()
        assert ours.session_key == django.session_key == (key if self.live(key) else None)


def test_sessions_in_any_order_load_as_djangos_do():
    run_machine(Sessions, examples=50, steps=20)


def test_a_request_compiles_neither_and_reads_each_once(client, settings, monkeypatch):
    """Once compiled in a process, the session's and the user's SQL is not
    compiled again: a request reads each with one query."""
    settings.PREPARED_QUERIES_CHECK = False  # the check compiles each call as Django would
    user = User.objects.create_user("hank", password="pw-hank-1234")
    client.force_login(user)
    client.get(reverse("approvals-count"))  # compiles both, if nothing did before
    compiled = []
    original = SQLCompiler.as_sql

    def counting(self, *args, **kwargs):
        compiled.append(self.query.model)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("approvals-count")).status_code == 200
    assert Session not in compiled and User not in compiled
    sql = [q["sql"] for q in queries]
    assert sum('FROM "django_session"' in s for s in sql) == 1
    assert sum('FROM "auth_user"' in s for s in sql) == 1
