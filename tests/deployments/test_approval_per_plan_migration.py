"""Migration 0009 (one decision per person and plan) rebuilds the approval
table on SQLite, which drops its triggers: the four-eyes trigger of 0003 must
be there afterwards, forward and backward."""

from __future__ import annotations

import sqlite3

import pytest

from tests.deployments.test_logline_key_migration import migrate


def four_eyes_refuses(path) -> bool:
    """Whether SQLite refuses an approval by the deployment's requester."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")  # rows of their own, no release needed
        conn.execute(
            "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined) VALUES"
            " (1, '', 0, 'alice', '', '', '', 0, 1, '2026-12-01')"
        )
        columns = {row[1] for row in conn.execute("PRAGMA table_info(deployments_deployment)")}
        # Columns later migrations add (NOT NULL, defaults kept by Django): given when present.
        later = {"image_checks": "'[]'", "emergency": "0", "review_comment": "''"}
        extra = {name: value for name, value in later.items() if name in columns}
        conn.execute(
            "INSERT INTO deployments_deployment (id, kind, status, reason, required_approvals,"
            " plan_sha256, error, created_at, environment_id, release_id, requested_by_id,"
            f" worker_name{''.join(', ' + name for name in extra)}) VALUES (1, 'deploy',"
            " 'awaiting_approval', 'r', 1, '', '', '2026-12-01', 1, 1, 1, ''"
            f"{''.join(', ' + value for value in extra.values())})"
        )
        try:
            conn.execute(
                "INSERT INTO deployments_approval (deployment_id, user_id, decision, comment,"
                " digest, created_at) VALUES (1, 1, 'approve', '', 'd', '2026-12-01')"
            )
        except sqlite3.IntegrityError as exc:
            return "may not decide" in str(exc)
        finally:
            conn.rollback()
    return False


@pytest.mark.parametrize("target", [None, "0008"])
def test_sqlite_keeps_the_four_eyes_trigger(tmp_path, target):
    path = tmp_path / "gantry.sqlite3"
    url = f"sqlite:///{path}"
    migrate(url)
    if target:
        migrate(url, "deployments", target)
    assert four_eyes_refuses(path)
