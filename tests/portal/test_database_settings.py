"""PostgreSQL connections come from a pool per process (DB_POOL_*), and a
page's queries are planned once per connection: parameters are bound on the
server and a query run DB_PREPARE_THRESHOLD times is prepared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
BASE = {"SECRET_KEY": "k", "AUDIT_KEY": "a", "HTTPS": "0", "PATH": os.environ.get("PATH", "")}
PRINT = (
    "import portal.settings as s; print(sorted(s.DATABASES['default'].get('OPTIONS', {}).items()))"
)
POSTGRES = "postgres://postgres@127.0.0.1:5432/gantry"


def options(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env={**BASE, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


POOL = (
    "('pool', {'name': 'gantry', 'min_size': 2, 'max_size': 20, 'timeout': 10,"
    " 'reconnect_timeout': 10})"
)


def test_postgresql_prepares_after_five_runs_unless_told():
    result = options(DATABASE_URL=POSTGRES)
    assert result.stdout.strip() == (
        f"[{POOL}, ('prepare_threshold', 5), ('server_side_binding', True)]"
    )
    assert (
        "('prepare_threshold', 0)"
        in options(DATABASE_URL=POSTGRES, DB_PREPARE_THRESHOLD="0").stdout
    )


def test_none_turns_it_off_for_a_pooler():
    result = options(DATABASE_URL=POSTGRES, DB_PREPARE_THRESHOLD="none")
    assert result.stdout.strip() == f"[{POOL}]"


def test_the_pool_takes_its_sizes_and_wait_from_the_environment():
    result = options(DATABASE_URL=POSTGRES, DB_POOL_MIN_SIZE="0", DB_POOL_MAX_SIZE="4",
                     DB_POOL_TIMEOUT="3")  # fmt: skip
    assert (
        "('pool', {'name': 'gantry', 'min_size': 0, 'max_size': 4, 'timeout': 3,"
        " 'reconnect_timeout': 3})"
    ) in result.stdout


def test_no_pool_and_a_connection_kept_per_thread_when_told():
    result = subprocess.run(
        [sys.executable, "-c", "import portal.settings as s; d = s.DATABASES['default']; "
         "print('pool' in d['OPTIONS'], d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**BASE, "DATABASE_URL": POSTGRES, "DB_POOL_MAX_SIZE": "0", "DB_CONN_MAX_AGE": "60"},
    )  # fmt: skip
    assert result.stdout.strip() == "False 60 True"


@pytest.mark.parametrize(("env", "message"), [
    ({"DB_CONN_MAX_AGE": "60"},
     "DB_CONN_MAX_AGE=60 keeps a connection per thread, which ASGI requests never reuse"),
    ({"DB_POOL_MAX_SIZE": "-1"}, "DB_POOL_MIN_SIZE=2 and DB_POOL_MAX_SIZE=-1: the sizes"),
    ({"DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "4"},
     "the minimum no larger than the maximum"),
    ({"DB_POOL_TIMEOUT": "0"}, "DB_POOL_TIMEOUT=0 must be a positive number of seconds."),
    ({"DB_POOL_MAX_SIZE": "many"}, "DB_POOL_MAX_SIZE='many' is not an integer."),
])  # fmt: skip
def test_a_bad_pool_setting_stops_start_up_naming_it(env, message):
    result = options(DATABASE_URL=POSTGRES, **env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "DB_PREPARE_THRESHOLD=-1 must be 0 or more, or none."),
    ("often", "DB_PREPARE_THRESHOLD='often' is not an integer."),
])  # fmt: skip
def test_a_bad_value_stops_start_up_naming_it(value, message):
    result = options(DATABASE_URL=POSTGRES, DB_PREPARE_THRESHOLD=value)
    assert result.returncode != 0
    assert message in result.stderr


def test_sqlite_has_no_such_options():
    result = options()
    assert "prepare_threshold" not in result.stdout and "pool" not in result.stdout


@pytest.mark.django_db
def test_a_query_run_often_is_prepared_on_the_server():
    """What the setting is for: after the threshold PostgreSQL keeps the plan
    (pg_prepared_statements lists it on this connection), so the same query
    with another parameter is not planned again."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]

    def prepared() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall() if "auth_user" in row[0]]

    for pk in range(threshold + 1):
        list(User.objects.filter(pk=pk))
    assert any('WHERE "auth_user"."id" = $1' in statement for statement in prepared())
