"""Encryption at rest for the few secrets the portal must hold (webhook URLs,
environment secret variables). Fernet (AES-128-CBC + HMAC) keyed by
FIELD_ENCRYPTION_KEY, or by a key derived from SECRET_KEY when unset."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet() -> Fernet:
    key = getattr(settings, "FIELD_ENCRYPTION_KEY", "") or ""
    if not key:
        digest = hashlib.sha256(b"gantry-field-encryption:" + settings.SECRET_KEY.encode()).digest()
        key = base64.urlsafe_b64encode(digest).decode()
    try:
        return Fernet(key)
    except ValueError:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is not a valid Fernet key.") from None


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "An encrypted field cannot be decrypted: "
            "was FIELD_ENCRYPTION_KEY or SECRET_KEY changed?"
        ) from None


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
