"""Checks every API endpoint applies to what a client sends in its query
string and path, so bad input is a 400 naming the parameter, never a
database error: NUL bytes, ids and offsets beyond PostgreSQL's bigint, page
sizes beyond the cap."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination

# The largest value of a bigint column (ids, seqs) and of SQL's OFFSET.
BIGINT_MAX = 2**63 - 1
# The most items one page of a list endpoint returns; a client wanting more pages on.
MAX_PAGE_SIZE = 500
_WHOLE_NUMBER = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes "²"


def reject_nul_bytes(params, names) -> None:
    """400 naming the parameter: PostgreSQL refuses NUL in text, which would be a 500."""
    bad = {name: ["Remove the NUL character."] for name in names if "\x00" in params.get(name, "")}
    if bad:
        raise serializers.ValidationError(bad)


def whole_number_error(raw: str, minimum: int = 0, maximum: int = BIGINT_MAX) -> str | None:
    """Why `raw` is not a whole number from minimum to maximum, or None when it is."""
    if _WHOLE_NUMBER.fullmatch(raw) and minimum <= int(raw) <= maximum:
        return None
    return f"Give a whole number from {minimum} to {maximum}."


def whole_number(
    params, name: str, *, default: int | None = None, minimum: int = 0, maximum: int = BIGINT_MAX
) -> int | None:
    """The query parameter `name` as an int (`default` when absent); 400 naming it."""
    if name not in params:
        return default
    raw = params.get(name, "").strip()
    error = whole_number_error(raw, minimum, maximum)
    if error:
        raise serializers.ValidationError({name: [error]})
    return int(raw)


def out_of_range_ids(kwargs: dict[str, Any]) -> dict[str, str]:
    """Path ids (ints from <int:…> converters) a bigint column cannot hold, with why."""
    return {
        name: f"Give an id from 0 to {BIGINT_MAX}."
        for name, value in kwargs.items()
        if isinstance(value, int) and not 0 <= value <= BIGINT_MAX
    }


class StrictCharField(serializers.CharField):
    """A JSON string, and only that: DRF's CharField also takes 42 as "42", so a
    client's type mistake would pass unnoticed (and the schema says string)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, and only that ("7", 7.0 and true are refused)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class CappedLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=&offset=` where a limit above MAX_PAGE_SIZE, a negative or huge
    offset, or anything that is not a whole number is a 400 naming it (DRF's
    own class silently falls back to the default, or passes a limit of 10^23
    on to the database)."""

    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request) -> int:
        default = self.default_limit or MAX_PAGE_SIZE
        return whole_number(
            request.query_params, self.limit_query_param, default=default, minimum=1,
            maximum=self.max_limit,
        )  # fmt: skip

    def get_offset(self, request) -> int:
        return whole_number(request.query_params, self.offset_query_param, default=0)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0, "maximum": BIGINT_MAX},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        parameters[0]["description"] += f" At most {self.max_limit}; default {self.default_limit}."
        return parameters
