"""`field__any=[...]`: a field equal to one of a list of integers, the list
bound as one parameter.

Django's `__in` writes one placeholder per value, so its SQL differs with
the length of the list and a prepared query (portal/core/prepared.py) cannot
hold it; every request that filters by "the environments this user may
see" compiled its query afresh. `__any` writes the same SQL for any list:
`= ANY(%s::bigint[])` on PostgreSQL, `IN (SELECT value FROM json_each(%s))`
on SQLite (the demo). An empty list matches nothing, as `__in` would.
"""

from __future__ import annotations

import json
import sqlite3

from django.db.models import ForeignKey, IntegerField, Lookup


class IntArray(list):
    """A list of integers bound as one parameter: psycopg sends it as an
    array, sqlite3 as JSON text (the adapter below)."""


sqlite3.register_adapter(IntArray, json.dumps)


class AnyOf(Lookup):
    lookup_name = "any"
    prepare_rhs = False

    def get_prep_lookup(self):
        if isinstance(self.rhs, (str, bytes)) or not hasattr(self.rhs, "__iter__"):
            raise TypeError(f"__any takes a list of integers, not {type(self.rhs).__name__}")
        values = IntArray()
        for value in self.rhs:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"__any takes a list of integers, not one holding {value!r}")
            values.append(value)
        return values

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        if connection.vendor == "postgresql":
            # Typed as the column: the array's type then never depends on the
            # values' sizes (psycopg would pick int2[] for small ones).
            field = self.lhs.output_field
            target = field.target_field if isinstance(field, ForeignKey) else field
            array_type = target.rel_db_type(connection)
            return f"{lhs} = ANY(%s::{array_type}[])", (*lhs_params, self.rhs)
        return f"{lhs} IN (SELECT value FROM json_each(%s))", (*lhs_params, self.rhs)


def register() -> None:
    """Make `__any` available on integer fields and foreign keys (AppConfig.ready)."""
    IntegerField.register_lookup(AnyOf)
    ForeignKey.register_lookup(AnyOf)
