"""Index definitions both databases Gantry runs on accept."""

from __future__ import annotations

from django.db import models
from django.db.models.expressions import OrderBy


class NullsLastIndex(models.Index):
    """An index whose `F(...).desc(nulls_last=True)` columns match that order
    on PostgreSQL, which sorts NULLs first on DESC without the modifier.

    SQLite refuses the modifier in an index, and needs none: it sorts NULLs
    as the smallest values, so last on DESC. There the columns are plain DESC.
    """

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "sqlite":
            return super().create_sql(model, schema_editor, using, **kwargs)
        plain = self.clone()
        plain.expressions = tuple(
            OrderBy(e.expression, descending=e.descending) if isinstance(e, OrderBy) else e
            for e in self.expressions
        )
        return models.Index.create_sql(plain, model, schema_editor, using, **kwargs)
