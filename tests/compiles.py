"""Counting what Django compiles: the models of the queries whose SQL is
built inside a block (prepared queries are built once a process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models.sql.compiler import SQLCompiler


@contextmanager
def compiled_models() -> Iterator[list]:
    """A list that fills with the model of every query compiled in the block."""
    compiled: list = []
    original = SQLCompiler.as_sql

    def counting(self, *args, **kwargs):
        compiled.append(self.query.model)
        return original(self, *args, **kwargs)

    SQLCompiler.as_sql = counting
    try:
        yield compiled
    finally:
        SQLCompiler.as_sql = original
