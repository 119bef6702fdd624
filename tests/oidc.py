"""A real OpenID provider for the SSO tests: node-oidc-provider (OpenID
Certified) running tests/oidc_provider/provider.mjs in its own process on a
free port of 127.0.0.1, started once per test session and stopped at its end.

`TestIdp` is the tests' handle on it: register a client, set a user's claims
(groups), disable a user, and walk an authorization request through the
provider's sign-in page the way a browser would.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
LOG_DIR = Path(__file__).resolve().parents[1] / "test-results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node is missing (Node.js >= 20 runs the test OpenID provider)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node


def install_provider() -> None:
    """npm ci, once: the pinned oidc-provider of package-lock.json."""
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: it installs the test OpenID provider (oidc-provider)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR, check=True,
                   capture_output=True, timeout=300)  # fmt: skip


class TestIdp:
    """The running provider and what the tests do with it."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, issuer: str, process: subprocess.Popen) -> None:
        self.issuer = issuer
        self.process = process

    def register_client(self, redirect_uris: list[str], *, refresh_tokens: bool = True):
        """A new confidential client (dynamic registration); returns (id, secret)."""
        grants = (
            ["authorization_code", "refresh_token"] if refresh_tokens else ["authorization_code"]
        )
        response = requests.post(
            f"{self.issuer}/reg",
            json={
                "redirect_uris": redirect_uris,
                "grant_types": grants,
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["client_id"], body["client_secret"]

    def set_account(self, login: str, *, groups: list[str] | None = None,
                    disabled: bool = False, mfa: bool = False, **claims) -> None:  # fmt: skip
        """Create or replace the account `login` (its `sub`), with its claims;
        `mfa`: its sign-ins name a second factor (amr pwd+otp, an MFA acr)."""
        if groups is not None:
            claims["groups"] = groups
        response = requests.put(
            f"{self.issuer}/test-admin/accounts/{login}",
            json={"claims": claims, "disabled": disabled, "mfa": mfa},
            timeout=10,
        )
        assert response.status_code == 204, response.text

    def delete_account(self, login: str) -> None:
        response = requests.delete(f"{self.issuer}/test-admin/accounts/{login}", timeout=10)
        assert response.status_code == 204, response.text

    def authorize(self, authorization_url: str, login: str) -> str:
        """Follow an authorization request through the provider, signing in as
        `login`; returns the URL the provider sends the browser back to."""
        assert authorization_url.startswith(self.issuer), authorization_url
        browser = requests.Session()
        url, method, data = authorization_url, "GET", None
        for _ in range(10):
            response = browser.request(method, url, data=data, allow_redirects=False, timeout=10)
            if response.is_redirect:
                location = urljoin(url, response.headers["Location"])
                if not location.startswith(self.issuer):
                    return location
                url, method, data = location, "GET", None
            elif response.status_code == 200 and 'name="login"' in response.text:
                if method == "POST":
                    raise AssertionError(f"the provider refused {login!r}: {response.text}")
                url, method, data = f"{url}/login", "POST", {"login": login}
            else:
                raise AssertionError(f"unexpected answer {response.status_code}: {response.text}")
        raise AssertionError("the provider never sent the browser back")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def running_provider() -> Iterator[TestIdp]:
    """Start provider.mjs on a free port; stop it when the block ends."""
    node = node_or_fail()
    install_provider()
    port = free_port()
    LOG_DIR.mkdir(exist_ok=True)
    log = open(LOG_DIR / f"oidc-provider-{port}.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [node, str(PROVIDER_DIR / "provider.mjs")],
        cwd=PROVIDER_DIR,
        env={**os.environ, "PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    idp = TestIdp(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the test OpenID provider exited; see {log.name}")
            try:
                if requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test OpenID provider did not start; see {log.name}")
            time.sleep(0.1)
        yield idp
    finally:
        idp.stop()
        log.close()


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[TestIdp]:
    """One provider for the whole session (each test registers its own client)."""
    with running_provider() as idp:
        yield idp


def host_of(url: str) -> str:
    return urlsplit(url).netloc
