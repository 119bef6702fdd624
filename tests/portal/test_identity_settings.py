"""Settings of key rotation and of the client address: bad values stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
BASE = {"SECRET_KEY": "k", "AUDIT_KEY": "a", "HTTPS": "0", "PATH": os.environ.get("PATH", "")}
PRINT = ("import portal.settings as s; print(s.TRUSTED_PROXY_COUNT, len(s.FIELD_ENCRYPTION_KEY),"
         " '|'.join(s.SECRET_KEY_FALLBACKS))")  # fmt: skip


def load_settings(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env={**BASE, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_defaults():
    result = load_settings()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0"]


def test_behind_a_proxy_one_hop_is_trusted_unless_told(tmp_path):
    assert load_settings(BEHIND_PROXY="1").stdout.split()[0] == "1"
    assert load_settings(BEHIND_PROXY="1", TRUSTED_PROXY_COUNT="2").stdout.split()[0] == "2"
    result = load_settings(TRUSTED_PROXY_COUNT="-1")
    assert result.returncode != 0
    assert "TRUSTED_PROXY_COUNT=-1 must be 0 or more" in result.stderr


def test_several_field_keys_and_fallbacks_from_a_file(tmp_path):
    keys = ",".join(Fernet.generate_key().decode() for _ in range(2))
    fallbacks = tmp_path / "fallbacks"
    fallbacks.write_text("old-key-1\nold,key,2\n")
    result = load_settings(FIELD_ENCRYPTION_KEY=keys, SECRET_KEY_FALLBACKS_FILE=str(fallbacks))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "2", "old-key-1|old,key,2"]


def test_a_malformed_field_key_stops_start_up_naming_it():
    result = load_settings(FIELD_ENCRYPTION_KEY=f"{Fernet.generate_key().decode()},not-a-key")
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY: key 2 is not a Fernet key" in result.stderr
