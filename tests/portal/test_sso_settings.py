"""The OIDC_* and LOCAL_LOGIN settings: a bad value stops start-up, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = {"SECRET_KEY": "k", "AUDIT_KEY": "a", "HTTPS": "0", "PATH": os.environ.get("PATH", "")}
SSO = {"OIDC_ISSUER": "https://idp.example.com", "OIDC_CLIENT_ID": "gantry",
       "OIDC_CLIENT_SECRET": "s3cret"}  # fmt: skip


def load_settings(**env: str) -> subprocess.CompletedProcess:
    code = (
        "import portal.settings as s; print(s.OIDC_ISSUER, s.OIDC_RECHECK_SECONDS, s.LOCAL_LOGIN)"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**BASE, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_it_starts_without_sso_by_default():
    result = load_settings()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["900", "True"]


def test_it_reads_the_sso_settings(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    env = {**SSO, "OIDC_CLIENT_SECRET": "", "OIDC_CLIENT_SECRET_FILE": str(secret),
           "OIDC_RECHECK_SECONDS": "60", "LOCAL_LOGIN": "0"}  # fmt: skip
    result = load_settings(**env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["https://idp.example.com", "60", "False"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OIDC_ISSUER": "idp.example.com"}, "OIDC_ISSUER='idp.example.com' is not an http(s) URL"),
        ({"OIDC_ISSUER": "http://idp.example.com"}, "must use https (http only on localhost)"),
        ({"OIDC_CLIENT_ID": None}, "Set the OIDC_CLIENT_ID environment variable"),
        ({"OIDC_CLIENT_SECRET": None}, "Set OIDC_CLIENT_SECRET or OIDC_CLIENT_SECRET_FILE"),
        ({"OIDC_RECHECK_SECONDS": "0"}, "OIDC_RECHECK_SECONDS=0 must be a positive number"),
        ({"OIDC_RECHECK_SECONDS": "soon"}, "OIDC_RECHECK_SECONDS='soon' is not an integer"),
        ({"OIDC_SCOPES": "email profile"}, "OIDC_SCOPES='email profile' must include openid"),
        ({"LOCAL_LOGIN": "maybe"}, "LOCAL_LOGIN='maybe' is not a boolean"),
        ({"OIDC_ISSUER": None, "LOCAL_LOGIN": "0"}, "LOCAL_LOGIN=0 needs OIDC_ISSUER"),
    ],
)
def test_it_stops_start_up_on_a_bad_value(env, message):
    merged = {**SSO, **env}
    result = load_settings(**{k: v for k, v in merged.items() if v is not None})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
