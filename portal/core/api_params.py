"""Checks every API endpoint applies to what a client sends in its query
string, so bad input is a 400 naming the parameter, never a database error."""

from __future__ import annotations

from rest_framework import serializers


def reject_nul_bytes(params, names) -> None:
    """400 naming the parameter: PostgreSQL refuses NUL in text, which would be a 500."""
    bad = {name: ["Remove the NUL character."] for name in names if "\x00" in params.get(name, "")}
    if bad:
        raise serializers.ValidationError(bad)
