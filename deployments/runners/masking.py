"""Secret masking for log lines and error messages, applied by the engine before
anything is stored or sent to a browser.

Two sources: the values an environment marks secret (matched literally), and
credentials of well-known shapes (AWS keys, bearer tokens, GitHub, Slack and
Gantry tokens) that might be printed by a tool however they got there.
This runs once per output line, so it stays a handful of precompiled regexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "****"

# Shorter secret values would mask ordinary words and digits all over the log.
MIN_SECRET_LENGTH = 4

# Patterns whose whole match is the secret.
_TOKEN_SHAPES = [
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key IDs
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+",  # Slack webhooks
    r"\bgty_[A-Za-z0-9_-]{8,}",  # Gantry API tokens
]
# Patterns whose first group is a label to keep and whose second is the secret.
_LABELLED = [
    r"(aws_secret_access_key[\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9/+=]{16,})",
    r"(\bBearer\s+)([A-Za-z0-9\-._~+/]+=*)",
    r"(\bAuthorization:\s*(?:Basic|Token)\s+)(\S+)",
]

_TOKEN_RE = re.compile("|".join(_TOKEN_SHAPES))
_LABELLED_RE = [re.compile(p, re.IGNORECASE) for p in _LABELLED]


def _flatten(value: Any) -> Iterable[str]:
    """Secret variables may be nested JSON; every scalar in them is a secret."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


class Masker:
    """Masks one environment's secrets and well-known credential shapes."""

    def __init__(self, secret_values: Any = None) -> None:
        values = {v for v in _flatten(secret_values or {}) if len(v) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(values, key=len, reverse=True)
        self._secrets_re = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def mask(self, text: str) -> str:
        if self._secrets_re is not None:
            text = self._secrets_re.sub(MASK, text)
        text = _TOKEN_RE.sub(MASK, text)
        for pattern in _LABELLED_RE:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    __call__ = mask


def mask(text: str, secret_values: Any = None) -> str:
    """One-off masking; for many lines build a `Masker` once."""
    return Masker(secret_values).mask(text)
