"""The newest run of an environment is read from an index in latest_first()
order (finish time, newest first, none last; then id), not by sorting every
run the environment ever had: what runs there now, its last run and the run
a rollback undoes are asked on every environment and deployment page."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from deployments.rollback import default_target, last_run
from tests.conftest import env
from tests.deployments.test_current_deployment import older_release, ran
from tests.deployments.test_logline_key_migration import migrate

pytestmark = pytest.mark.django_db


def plans_of(lookup) -> list[str]:
    """The query plans of the queries `lookup()` runs."""
    queries = []

    def capture(execute, sql, params, many, context):
        queries.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        lookup()
    plans = []
    with transaction.atomic(), connection.cursor() as cursor:
        # A test database holds a handful of rows, for which a sequential scan
        # and a sort are cheapest: make the planner show what it would do with
        # a history of thousands, where they are not.
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql, params in queries:
            cursor.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    return plans


@pytest.fixture
def production(catalog, release, users):
    production = env(catalog, "production")
    older = older_release(catalog, users)
    now = timezone.now()
    # The release without a finish time was recorded by hand: not what runs now.
    for shipped, finished in ((older, now - timedelta(days=2)), (release, now), (older, None)):
        ran(shipped, production, users, finished)
    return production


@pytest.mark.parametrize(
    "lookup",
    [lambda e: e.deployments.runs_now(), last_run, default_target],
    ids=["runs now", "last run", "rollback target"],
)
def test_newest_run_is_read_in_index_order(production, lookup):
    plans = plans_of(lambda: lookup(production))

    assert plans
    for plan in plans:
        assert "deployment_env_latest_first" in plan, plan
        assert "Sort" not in plan, plan


def test_the_lookups_still_answer_by_latest_first(production, release):
    """The index changes how, not what: the newest finished success runs now
    (the one without a finish time is last), and a rollback undoes it."""
    assert production.deployments.runs_now().release == release
    assert last_run(production).release == release
    target, undo = default_target(production)
    assert undo.release == release and target.version == "1.3.0"


def test_sqlite_builds_the_index_in_the_same_order(tmp_path):
    """`make run`'s SQLite refuses NULLS LAST in an index and needs none: it
    sorts NULLs last on DESC. The migration builds it there as plain DESC,
    and SQLite answers what runs now from it without sorting."""
    path = tmp_path / "gantry.sqlite3"
    migrate(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        # (seqno, cid, name, desc, collation, key)
        columns = [
            (row[2], row[3])
            for row in conn.execute("PRAGMA index_xinfo('deployment_env_latest_first')")
            if row[5]
        ]
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM deployments_deployment"
                " WHERE environment_id = 1 AND status = 'succeeded'"
                " ORDER BY finished_at DESC, id DESC LIMIT 1"
            )
        )
    assert columns == [("environment_id", 0), ("finished_at", 1), ("id", 1)]
    assert "deployment_env_latest_first" in plan and "TEMP B-TREE" not in plan, plan
