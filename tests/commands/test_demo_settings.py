"""manage.py in a checkout where `make run` set up the demo: plain commands
use the demo's settings (var/demo.env), and the first-hour trap
`DEBUG=1 manage.py issue_token alice` can no longer break the demo's chain.

The commands run as real processes against this test's database (committed
data), as a person would type them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection

from portal.core import audit
from portal.core.audit_chain import verify_chain
from portal.core.models import ApiToken, AuditChainKey, AuditEvent
from portal.core.tokens import hash_token

ROOT = Path(settings.BASE_DIR)
PYTHON = str(ROOT / ".venv" / "bin" / "python")
if not Path(PYTHON).exists():  # a CI image without the project's venv
    PYTHON = sys.executable
# What a person's shell has: none of the settings make run exports.
SETTINGS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE", "AUDIT_KEY",
            "AUDIT_KEY_FILE", "DEBUG", "HTTPS", "DJANGO_SETTINGS_MODULE")  # fmt: skip

spec = importlib.util.spec_from_file_location("manage", ROOT / "manage.py")
manage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(manage)


def test_database_url() -> str:
    return (
        urlsplit(os.environ["DATABASE_URL"])
        ._replace(path=f"/{connection.settings_dict['NAME']}")
        .geturl()
    )


test_database_url.__test__ = False  # a helper, not a test


def bare_shell(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return {**environ, **extra}


def run(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


@pytest.fixture
def demo_var(tmp_path) -> Path:
    """A var/ as scripts/run.sh leaves it: key files and demo.env (here naming
    this test's database and Redis, where make run names SQLite and its socket)."""
    (tmp_path / "secret_key").write_text("demo-secret-key-of-this-checkout\n")
    (tmp_path / "audit_key").write_text(settings.AUDIT_KEY.decode() + "\n")
    (tmp_path / "demo.env").write_text(
        "# The demo's settings, written by scripts/run.sh for manage.py. Do not edit.\n"
        f"DATABASE_URL={test_database_url()}\n"
        f"REDIS_URL={settings.REDIS_URL}\n"
        f"SECRET_KEY_FILE={tmp_path / 'secret_key'}\n"
        f"AUDIT_KEY_FILE={tmp_path / 'audit_key'}\n"
        "HTTPS=0\nDEBUG=0\n"
    )
    return tmp_path


@pytest.fixture
def demo_chain(users, catalog) -> int:
    """A chain signed with the demo's key (the suite's AUDIT_KEY), committed."""
    audit.forget_checked_key()
    audit.record("demo.seeded", ("test.thing", 1, "the demo"), actor=users["erin"])
    return AuditEvent.objects.count()


def test_it_reads_the_demo_settings_when_none_are_given(demo_var):
    added = manage.demo_defaults(demo_var / "demo.env", {"PATH": "/usr/bin"})
    assert added["DATABASE_URL"] == test_database_url()
    assert added["AUDIT_KEY_FILE"] == str(demo_var / "audit_key")
    assert added["HTTPS"] == "0"


def test_settings_given_win_over_the_demos(demo_var):
    given = {"DATABASE_URL": test_database_url(), "AUDIT_KEY": "mine", "HTTPS": "1"}
    added = manage.demo_defaults(demo_var / "demo.env", given)
    assert "AUDIT_KEY_FILE" in added  # the file form is unset, but AUDIT_KEY (given) wins
    assert "HTTPS" not in added and "DATABASE_URL" not in added


@pytest.mark.parametrize(
    "given",
    [{"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/elsewhere"},
     {"DJANGO_SETTINGS_MODULE": "portal.settings"}],
)  # fmt: skip
def test_another_database_leaves_the_demo_settings_out(demo_var, given):
    assert manage.demo_defaults(demo_var / "demo.env", given) == {}


def test_without_make_run_there_is_nothing_to_read(tmp_path):
    assert manage.demo_defaults(tmp_path / "demo.env", {}) == {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_it_issues_a_token_with_the_demo_settings(demo_var, demo_chain, users):
    demo_env = str(demo_var / "demo.env")
    code = f"import manage; from pathlib import Path; manage.main(Path({demo_env!r}))"
    result = run([PYTHON, "-c", code, "issue_token", "alice"], bare_shell())
    assert result.returncode == 0, result.stderr
    assert "the demo's settings" in result.stderr
    key = result.stdout.splitlines()[-1]
    assert ApiToken.objects.get(user=users["alice"]).key_hash == hash_token(key)
    assert AuditEvent.objects.filter(action="token.issued").count() == 1
    assert verify_chain(key=settings.AUDIT_KEY).ok


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_debug_cannot_sign_the_demo_chain_with_its_development_key(demo_chain, users):
    # The workaround the README used to invite: DEBUG=1, no keys, the demo's database.
    result = run([PYTHON, "manage.py", "issue_token", "alice"],
                 bare_shell(DEBUG="1", DATABASE_URL=test_database_url(),
                            REDIS_URL=settings.REDIS_URL))  # fmt: skip
    assert result.returncode == 1
    assert "Refusing to append to the audit trail" in result.stderr
    assert "DEBUG's fixed development key" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing half-written: no token, no event, and the chain still verifies.
    assert not ApiToken.objects.exists()
    assert AuditEvent.objects.count() == demo_chain
    assert AuditChainKey.objects.get().fingerprint == audit.key_fingerprint(settings.AUDIT_KEY)
    assert verify_chain(key=settings.AUDIT_KEY).ok
