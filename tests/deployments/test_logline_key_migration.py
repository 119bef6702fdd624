"""Migration 0008 moves log lines from a surrogate id to the (deployment, seq)
key, on PostgreSQL in place and on SQLite by a rebuild: run forward and back
by `manage.py migrate` on a scratch database of each, with lines in it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
LINES = [(1, 1, "stdout", "Terraform will perform the following actions:"),
         (1, 2, "stderr", "Error acquiring the state lock"),
         (2, 1, "system", "$ terraform init")]  # fmt: skip


def migrate(database_url: str, *target: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", *target, "-v0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def postgres_url():
    db = settings.DATABASES["default"]
    parts = urlsplit(f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/postgres")
    name = f"gantry_migration_{os.environ.get('PYTEST_XDIST_WORKER', 'master')}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_keeps_every_line_both_ways(postgres_url):
    migrate(postgres_url, "deployments", "0007")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for deployment, seq, stream, text in LINES:
            conn.execute(
                "INSERT INTO deployments_logline (deployment_id, seq, stream, text, at)"
                " VALUES (%s, %s, %s, %s, now())",
                (deployment, seq, stream, text),
            )
    migrate(postgres_url)
    assert key_columns(postgres_url) == ["deployment_id", "seq"]
    assert lines(postgres_url) == LINES
    with psycopg.connect(postgres_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO deployments_logline (deployment_id, seq, stream, text, at)"
            " VALUES (1, 2, 'stdout', 'again', now())"
        )
    migrate(postgres_url, "deployments", "0007")
    assert key_columns(postgres_url) == ["id"]
    assert lines(postgres_url) == LINES


def test_sqlite_keeps_every_line_both_ways(tmp_path):
    path = tmp_path / "gantry.sqlite3"
    url = f"sqlite:///{path}"
    migrate(url, "deployments", "0007")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO deployments_logline (deployment_id, seq, stream, text, at)"
            " VALUES (?, ?, ?, ?, '2026-12-01 12:00:00')",
            LINES,
        )
    migrate(url)
    with sqlite3.connect(path) as conn:
        columns = conn.execute("PRAGMA table_info(deployments_logline)").fetchall()
        # (cid, name, type, notnull, default, pk position)
        assert sorted((c[5], c[1]) for c in columns if c[5]) == [(1, "deployment_id"), (2, "seq")]
        assert (
            sorted(conn.execute("SELECT deployment_id, seq, stream, text FROM deployments_logline"))
            == LINES
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO deployments_logline (deployment_id, seq, stream, text, at)"
                " VALUES (1, 2, 'stdout', 'again', '2026-12-01 12:00:00')"
            )
    migrate(url, "deployments", "0007")
    with sqlite3.connect(path) as conn:
        columns = conn.execute("PRAGMA table_info(deployments_logline)").fetchall()
        assert [c[1] for c in columns if c[5]] == ["id"]
        assert (
            sorted(conn.execute("SELECT deployment_id, seq, stream, text FROM deployments_logline"))
            == LINES
        )


def key_columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
            " WHERE i.indrelid = 'deployments_logline'::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey, a.attnum)"
        ).fetchall()
    return [name for (name,) in rows]


def lines(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT deployment_id, seq, stream, text FROM deployments_logline"
            " ORDER BY deployment_id, seq"
        ).fetchall()


def sqlite_lines(conn: sqlite3.Connection) -> list[tuple]:
    return sorted(conn.execute("SELECT deployment_id, seq, stream, text FROM deployments_logline"))
