"""Querysets whose SQL is compiled once per process, not once per request.

Django compiles a queryset's SQL afresh every time it is evaluated: it walks
the joins of select_related, quotes every column of every joined table and
builds the ORDER BY, then binds the parameters. On the pages an approver
reads most, that was about a third of the page's CPU (docs/PERFORMANCE.md),
for SQL that is the same on every request but for the values of a few
parameters. (SQLAlchemy caches its compiled statements for the same reason;
Django has no such cache.)

A prepared query is a function of a few named values that returns a
queryset, and declares each value's type (int, str, or list: a list of
integers, filtered with `field__any=`, never `__in`)::

    @prepared(pk=int)
    def deployment_row(pk):
        return Deployment.objects.select_related("release").filter(pk=pk)

    deployment_row.first(pk=pk)    # or .list(...); .of(parent) for a query
                                   # of one value named <field>_id: the
                                   # parent's rows, pointing back at it

A prefetch_related inside a prepared query is compiled as usual on every
call (its SQL holds the parents' keys): read the children with a prepared
query of their own instead, `children_of.prefetch(parent, "children")`, or
keep_prefetched() rows read otherwise.

The first call in a process compiles the queryset once with stand-in values
(unlikely numbers, strings starting with NUL) and notes where each lands
among the SQL's parameters. Every call after that binds the real values at
those places and runs the same SQL; Django builds the rows into objects as
usual (select_related, annotations, prefetch_related).

So the function must build the same SQL whatever the values are: use them
only as filter values compared for equality, never to choose what to
filter, join or order by, never in a Prefetch's queryset (prefetches run
as built from the stand-ins), and never as a slice (limits are written
into the SQL, not passed as parameters). A value that lands nowhere among the
parameters is refused when the query is first compiled. With
settings.PREPARED_QUERIES_CHECK (the test suite sets it), every call also
compiles the queryset with the real values, as Django would, and fails
loudly if the SQL or the parameters differ.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet

# Stand-ins fit every integer column, the smallest included (Django 5
# answers a lookup outside a column's range with no SQL at all). The query is
# compiled with two sets of them: a value's places are where the two differ,
# so a constant of the query that happens to equal one is never taken for it.
_INT_STANDINS = (32_001, 32_002)
_TYPES = (int, str, list)


class PreparedQueryError(Exception):
    """A prepared query used in a way that would run the wrong SQL."""


@dataclass(frozen=True)
class _Compiled:
    queryset: QuerySet  # built from the stand-ins, never evaluated
    compiler: object  # its compiler, after as_sql(): the columns and how to read them
    sql: str
    params: tuple
    # Each value's places in params, with the type Django gave it there.
    slots: tuple[tuple[str, tuple[tuple[int, type], ...]], ...]


class _BoundQuery:
    """Stands in for the queryset's Query while Django evaluates it: hands out
    a copy of the compiled compiler, on this thread's connection, whose SQL
    is the compiled SQL with this call's parameters."""

    def __init__(self, compiled: _Compiled, params: tuple) -> None:
        self._compiled = compiled
        self._params = params

    def get_compiler(self, using=None, connection=None, elide_empty=True):
        compiler = _shallow_copy(self._compiled.compiler)
        compiler.connection = connection or connections[using or DEFAULT_DB_ALIAS]
        sql, params = self._compiled.sql, self._params
        compiler.as_sql = lambda *args, **kwargs: (sql, params)
        return compiler

    def __getattr__(self, name: str):
        # What the iterables read besides the compiler (values(): the field names).
        return getattr(self._compiled.queryset.query, name)


class PreparedQuery:
    def __init__(self, build: Callable[..., QuerySet], types: dict[str, type]) -> None:
        for name, kind in types.items():
            if kind not in _TYPES:
                raise TypeError(
                    f"{name}: a prepared query's values are int, str or list, not {kind}"
                )
        self.build = build
        self.types = types
        self._compiled: _Compiled | None = None
        self._lock = threading.Lock()
        self.__doc__ = build.__doc__
        self.__name__ = build.__name__

    def list(self, **values) -> list[Model]:
        """The rows, read with the compiled SQL and these values."""
        return list(self._bound(**values))

    def first(self, **values) -> Model | None:
        """The first of the rows (slice the query in its function for a LIMIT)."""
        rows = self.list(**values)
        return rows[0] if rows else None

    def of(self, parent: Model) -> list[Model]:
        """The rows of `parent`, for a query whose one value is `<field>_id`,
        the parent's key: each row points back at it, as the parent's related
        manager would have them (reading row.<field> costs no query)."""
        if len(self.types) != 1 or not next(iter(self.types)).endswith("_id"):
            raise TypeError(f"{self.__name__}: of() needs one value named <field>_id")
        (name,) = self.types
        rows = self.list(**{name: parent.pk})
        field = name.removesuffix("_id")
        for row in rows:
            setattr(row, field, parent)
        return rows

    def prefetch(self, parent: Model, name: str) -> None:
        """`parent.<name>` read by of(parent) and kept there as prefetch_related
        would keep it (keep_prefetched), unless it is prefetched already."""
        if name not in getattr(parent, "_prefetched_objects_cache", {}):
            keep_prefetched(parent, name, self.of(parent))

    def _bound(self, **values) -> QuerySet:
        """A queryset that runs the compiled SQL with these values, evaluated
        at once by list() and never handed out: filtering, counting or
        slicing it would derive a query from the stand-ins' Query."""
        self._check_values(values)
        compiled = self._compiled or self._compile()
        params = list(compiled.params)
        for name, places in compiled.slots:
            value = values[name]
            for place, kind in places:
                params[place] = value if kind is type(value) else kind(value)
        params = tuple(params)
        if settings.PREPARED_QUERIES_CHECK:
            self._check_against_django(compiled, values, params)
        queryset = _shallow_copy(compiled.queryset)
        queryset._query = _BoundQuery(compiled, params)
        return queryset

    def _check_values(self, values: dict) -> None:
        if values.keys() != self.types.keys():
            raise TypeError(
                f"{self.__name__} takes {sorted(self.types)}, was given {sorted(values)}"
            )
        for name, value in values.items():
            # A choice (a str or int enum) is its value; a bool is an int to
            # Python, not to a filter: refused with None and the rest.
            if not isinstance(value, self.types[name]) or isinstance(value, bool):
                raise TypeError(
                    f"{self.__name__}: {name} must be {self.types[name].__name__}, "
                    f"not {type(value).__name__}"
                )
            if isinstance(value, list) and not all(
                isinstance(item, int) and not isinstance(item, bool) for item in value
            ):
                raise TypeError(f"{self.__name__}: {name} must be a list of integers")

    def _standins(self, first: int) -> dict:
        def standin(index: int, name: str, kind: type):
            if kind is int:
                return _INT_STANDINS[first] + 2 * index
            if kind is list:  # one parameter whatever its length: __any (portal/core/lookups.py)
                return [_INT_STANDINS[first] + 2 * index]
            return f"\x00{'ab'[first]}{self.__name__}.{name}"

        return {
            name: standin(index, name, kind)
            for index, (name, kind) in enumerate(self.types.items())
        }

    def _compile(self) -> _Compiled:
        with self._lock:
            if self._compiled is not None:
                return self._compiled
            queryset = self.build(**self._standins(0))
            if queryset._known_related_objects:
                raise PreparedQueryError(
                    f"{self.__name__}: build from a model's manager, not a related "
                    "manager (its instance would be the stand-in's)"
                )
            # On the database it reads from, as Django would choose it (Gantry has one).
            compiler = queryset.query.get_compiler(using=queryset.db)
            sql, params = compiler.as_sql()
            other = self.build(**self._standins(1))
            other_sql, other_params = other.query.get_compiler(using=other.db).as_sql()
            if other_sql != sql or len(other_params) != len(params):
                raise PreparedQueryError(
                    f"{self.__name__}: its SQL depends on the values, not only its parameters "
                    "(a value used as a slice, or to choose what the query does?)"
                )
            if _prefetch_sql(queryset) != _prefetch_sql(other):
                # The prefetches run as built here, from the stand-ins.
                raise PreparedQueryError(
                    f"{self.__name__}: a value is used in a prefetch's queryset; prefetch "
                    "those rows after reading (prefetch_related_objects)"
                )
            slots = []
            for name, standin, other_standin in zip(
                self.types, self._standins(0).values(), self._standins(1).values(), strict=True
            ):
                # Each place with the type Django gave the value there: the
                # PostgreSQL backend wraps some integers (psycopg's Int4) to
                # pin their SQL type.
                places = tuple(
                    (i, type(one))
                    for i, (one, two) in enumerate(zip(params, other_params, strict=True))
                    if isinstance(one, type(standin)) and one == standin and two == other_standin
                )  # fmt: skip
                if not places:
                    raise PreparedQueryError(
                        f"{self.__name__}: {name} is not a parameter of its SQL"
                    )
                slots.append((name, places))
            compiled = _Compiled(queryset, compiler, sql, tuple(params), tuple(slots))
            self._compiled = compiled
            return compiled

    def _check_against_django(self, compiled: _Compiled, values: dict, params: tuple) -> None:
        queryset = self.build(**values)
        sql, expected = queryset.query.get_compiler(using=queryset.db).as_sql()
        if sql != compiled.sql or tuple(expected) != params:
            raise PreparedQueryError(
                f"{self.__name__}({values}) builds other SQL than it was prepared with:\n"
                f"prepared: {compiled.sql} {params}\nDjango:   {sql} {tuple(expected)}"
            )


def _prefetch_sql(queryset: QuerySet) -> list:
    """The SQL and parameters of the querysets given to Prefetch()es of `queryset`."""
    compiled = []
    for lookup in queryset._prefetch_related_lookups:
        inner = getattr(lookup, "queryset", None)
        if inner is not None:
            try:
                compiled.append(inner.query.get_compiler(using=inner.db).as_sql())
            except EmptyResultSet:
                compiled.append(None)
    return compiled


def keep_prefetched(parent: Model, name: str, rows: list[Model]) -> None:
    """Keep `rows` as what `parent.<name>.all()` answers, `name` a reverse
    foreign key's accessor, as prefetch_related would keep them: reading
    them then makes no query. Each row points back at `parent`."""
    manager = getattr(parent, name)
    field = getattr(manager, "field", None)  # the children's foreign key to the parent
    if field is None or not field.many_to_one or field.remote_field.get_accessor_name() != name:
        raise TypeError(f"{name} is not a reverse foreign key of {type(parent).__name__}")
    for row in rows:
        if getattr(row, field.attname) != parent.pk:
            raise PreparedQueryError(f"{row!r} is not one of {parent!r}'s {name}")
        setattr(row, field.name, parent)
    cache = parent.__dict__.setdefault("_prefetched_objects_cache", {})
    cache.pop(name, None)  # else get_queryset() would answer the kept one
    queryset = manager.get_queryset()  # filtered by the parent, never evaluated
    queryset._result_cache = list(rows)
    queryset._prefetch_done = True
    cache[name] = queryset


def _shallow_copy(instance):
    """A new object sharing the instance's attributes. Not copy.copy(): it
    pickles a QuerySet's state, which evaluates it."""
    duplicate = object.__new__(type(instance))
    duplicate.__dict__.update(instance.__dict__)
    return duplicate


def prepared(**types: type) -> Callable[[Callable[..., QuerySet]], PreparedQuery]:
    """Declare a prepared query: the values it takes and their types (int, str
    or list, a list of integers for `__any`)."""
    return lambda build: PreparedQuery(build, types)
