"""Field encryption with a list of keys: the first encrypts, all decrypt."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from environments.models import Environment
from portal.core import crypto
from portal.core.models import AuditEvent

OLD_SECRET = "the-secret-key-before-rotation"
NEW_SECRET = "the-secret-key-after-rotation"


@pytest.fixture(autouse=True)
def fresh_keys():
    crypto._fernet.cache_clear()
    yield
    crypto._fernet.cache_clear()


def test_it_reads_values_encrypted_before_secret_key_was_rotated(settings, catalog):
    settings.FIELD_ENCRYPTION_KEY = ""
    settings.SECRET_KEY = OLD_SECRET
    production = catalog.environments.get(slug="production")
    production.webhook_url = "https://hooks.example.com/T000/B000/xyz"
    production.secret_variables = {"DB_PASSWORD": "s3cret"}
    production.save()

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_SECRET, [OLD_SECRET]
    crypto._fernet.cache_clear()
    again = Environment.objects.get(pk=production.pk)
    assert again.webhook_url == "https://hooks.example.com/T000/B000/xyz"
    assert again.secret_variables == {"DB_PASSWORD": "s3cret"}


def test_it_refuses_values_of_a_key_it_no_longer_has(settings, catalog):
    settings.FIELD_ENCRYPTION_KEY = ""
    settings.SECRET_KEY = OLD_SECRET
    production = catalog.environments.get(slug="production")
    production.webhook_url = "https://hooks.example.com/T000/B000/xyz"
    production.save()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_SECRET, []
    crypto._fernet.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FALLBACKS"):
        Environment.objects.get(pk=production.pk)


def test_it_decrypts_with_any_of_several_explicit_keys(settings, catalog):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    production = catalog.environments.get(slug="production")
    production.secret_variables = {"API_KEY": "k-123"}
    production.save()
    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    assert Environment.objects.get(pk=production.pk).secret_variables == {"API_KEY": "k-123"}
    # New values are written with the first key only.
    production.webhook_url = "https://hooks.example.com/new"
    production.save()
    stored = raw_column(production.pk, "webhook_url")
    assert Fernet(new.encode()).decrypt(stored.encode()) == b"https://hooks.example.com/new"


def raw_column(pk: int, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM environments_environment WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_rotate_encrypted_fields_re_encrypts_every_column_and_is_audited(settings, catalog):
    settings.FIELD_ENCRYPTION_KEY = ""
    settings.SECRET_KEY = OLD_SECRET
    for number, environment in enumerate(catalog.environments.all()):
        environment.webhook_url = f"https://hooks.example.com/{number}"
        environment.secret_variables = {"N": str(number)}
        environment.save()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_SECRET, [OLD_SECRET]
    out = StringIO()
    call_command("rotate_encrypted_fields", "--batch-size", "2", stdout=out)
    assert "environments.environment.webhook_url: 3 value(s) re-encrypted" in out.getvalue()
    # The old key can go now: every value reads with the new one alone.
    settings.SECRET_KEY_FALLBACKS = []
    for number, environment in enumerate(Environment.objects.order_by("pk")):
        assert environment.webhook_url == f"https://hooks.example.com/{number}"
        assert environment.secret_variables == {"N": str(number)}
    event = AuditEvent.objects.filter(action="encryption.rotated").latest("seq")
    assert event.after["columns"]["environments.environment.webhook_url"] == 3
    assert event.after["columns"]["environments.environment.secret_variables"] == 3
    # Run again: nothing left to rewrite.
    out = StringIO()
    call_command("rotate_encrypted_fields", stdout=out)
    assert "environments.environment.webhook_url: 0 value(s)" in out.getvalue()
