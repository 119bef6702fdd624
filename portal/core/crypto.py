"""Encryption at rest for the few secrets the portal must hold (webhook URLs,
environment secret variables, the IdP's tokens, TOTP keys).

Fernet (AES-128-CBC + HMAC) with a list of keys, as MultiFernet uses them:
the first encrypts, every one decrypts. The keys are FIELD_ENCRYPTION_KEY
(several, comma-separated, newest first) or, when it is unset, keys derived
from SECRET_KEY and then each of SECRET_KEY_FALLBACKS, so rotating SECRET_KEY
the way Django documents it keeps every stored secret readable.
`manage.py rotate_encrypted_fields` then re-encrypts the stored values with
the first key, after which the old keys can be dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver

KEY_SETTINGS = ("FIELD_ENCRYPTION_KEY", "SECRET_KEY", "SECRET_KEY_FALLBACKS")


def derived_key(secret: str) -> str:
    """The Fernet key made from a SECRET_KEY (or one of its fallbacks)."""
    digest = hashlib.sha256(b"gantry-field-encryption:" + secret.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def configured_keys() -> list[str]:
    """The keys in use, the encrypting one first."""
    explicit = getattr(settings, "FIELD_ENCRYPTION_KEY", "") or ""
    if isinstance(explicit, str):
        explicit = [key.strip() for key in explicit.split(",")]
    keys = [key for key in explicit if key]
    if keys:
        return keys
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [derived_key(secret) for secret in secrets if secret]


@cache
def _fernet() -> MultiFernet:
    fernets = []
    for position, key in enumerate(configured_keys(), start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise ImproperlyConfigured(
                f"FIELD_ENCRYPTION_KEY: key {position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
    if not fernets:
        raise ImproperlyConfigured("Set FIELD_ENCRYPTION_KEY or SECRET_KEY.")
    return MultiFernet(fernets)


@receiver(setting_changed)
def _keys_changed(setting: str, **kwargs) -> None:
    if setting in KEY_SETTINGS:
        _fernet.cache_clear()


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "An encrypted field cannot be decrypted with any configured key: keep the old "
            "key in FIELD_ENCRYPTION_KEY (after the new one) or, when the key is derived, "
            "the old SECRET_KEY in SECRET_KEY_FALLBACKS."
        ) from None


def reencrypt(token: str) -> str:
    """The same secret encrypted with the first key (MultiFernet.rotate)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        decrypt(token)  # raises with the explanation
        raise


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; Python code sees the clear text."""

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value


class EncryptedJSONField(models.TextField):
    """A JSON object stored encrypted as one text column."""

    def from_db_value(self, value, expression, connection) -> Any:
        return json.loads(decrypt(value)) if value else {}

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        if not value:
            return {}
        return json.loads(value)

    def get_prep_value(self, value):
        if not value:
            return ""
        return encrypt(json.dumps(value, sort_keys=True))


ENCRYPTED_FIELDS = (EncryptedTextField, EncryptedJSONField)
