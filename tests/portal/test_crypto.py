"""Field encryption with a list of keys: the first encrypts, all decrypt."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from environments.models import Environment
from portal.core import crypto

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
