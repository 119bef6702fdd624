"""Secret masking for log lines and error messages, applied by the engine before
anything is stored or sent to a browser.

Two sources: the values an environment marks secret (matched literally), and
credentials of well-known shapes (AWS keys, bearer tokens, GitHub, Slack and
Gantry tokens) that might be printed by a tool however they got there.
This runs on every chunk of step output (a batch of lines at a time), so it
stays a handful of precompiled regexes, each tried only when a literal it
needs is present.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "****"

# Shorter secret values would mask ordinary words and digits all over the log.
MIN_SECRET_LENGTH = 4

# Each pattern comes with literals that any match contains: a plain `in`
# test skips the regex scan of text that cannot match, which is nearly all log
# text (the scans of these alternations cost ~10 µs a line; the tests ~0.1).
# Patterns whose whole match is the secret.
_TOKEN_SHAPES = [
    (("AKIA", "ASIA"), r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key IDs
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    (("github_pat_",), r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    (("xox",), r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    (("hooks.slack.com",), r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+"),  # webhooks
    (("gty_",), r"\bgty_[A-Za-z0-9_-]{8,}"),  # Gantry API tokens
]
# Patterns whose first group is a label to keep and whose second is the secret;
# matched regardless of case (their literals are lower case, tested against the
# lowered text). None of them crosses a newline ([ \t], not \s), so masking a
# chunk of many lines at once gives exactly what masking each line would.
_LABELLED = [
    (("aws_secret_access_key",),
     r"(aws_secret_access_key[\"']?[ \t]*[:=][ \t]*[\"']?)([A-Za-z0-9/+=]{16,})"),
    (("bearer",), r"(\bBearer[ \t]+)([A-Za-z0-9\-._~+/]+=*)"),
    (("authorization",), r"(\bAuthorization:[ \t]*(?:Basic|Token)[ \t]+)([^\s]+)"),
]  # fmt: skip

_TOKEN_RES = [(hints, re.compile(pattern)) for hints, pattern in _TOKEN_SHAPES]
_LABELLED_RES = [(hints, re.compile(pattern, re.IGNORECASE)) for hints, pattern in _LABELLED]


def _keep_label(match: re.Match) -> str:
    return match.group(1) + MASK


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
        # A multi-line secret (a PEM key) is masked line by line: a tool prints
        # it as lines, and the engine masks chunks that may end inside it.
        values = {
            line
            for value in _flatten(secret_values or {})
            for line in value.splitlines()
            if len(line.strip()) >= MIN_SECRET_LENGTH
        }
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted(values, key=len, reverse=True)
        self._secrets_re = (
            re.compile("|".join(map(re.escape, self._secrets))) if self._secrets else None
        )

    def mask(self, text: str) -> str:
        # Plain loops, not any() over generators: the engine calls this for
        # every chunk a step prints, a line or two each when a tool prints
        # flat out, and the nine generators cost four times the tests.
        if self._secrets_re is not None:
            for secret in self._secrets:
                if secret in text:
                    text = self._secrets_re.sub(MASK, text)
                    break
        for hints, pattern in _TOKEN_RES:
            for hint in hints:
                if hint in text:
                    text = pattern.sub(MASK, text)
                    break
        lowered = text.lower()
        for hints, pattern in _LABELLED_RES:
            for hint in hints:
                if hint in lowered:
                    text = pattern.sub(_keep_label, text)
                    lowered = text.lower()
                    break
        return text

    __call__ = mask


def mask(text: str, secret_values: Any = None) -> str:
    """One-off masking; for many lines build a `Masker` once."""
    return Masker(secret_values).mask(text)
