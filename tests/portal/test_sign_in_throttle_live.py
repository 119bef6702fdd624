"""Sign-in throttling under real concurrent requests against a live server:
threads guessing at once share one count (Redis), on the sign-in page and
with API tokens, and the lock holds for the right password or key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.contrib.auth.models import User

from portal.core import tokens
from portal.core.models import AuditEvent

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery"
GUESSES = 24


def sign_in_attempt(base: str, username: str, password: str) -> int:
    """One browser's attempt: fetch the form (CSRF cookie), post it."""
    browser = requests.Session()
    page = browser.get(f"{base}/login/", timeout=30)
    token = browser.cookies["csrftoken"]
    assert page.status_code == 200
    response = browser.post(
        f"{base}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/login/"},
        allow_redirects=False,
        timeout=30,
    )
    return response.status_code


def test_concurrent_password_guesses_lock_the_user_out(live_server, transactional_db):
    User.objects.create_user("alice", "alice@example.com", PASSWORD)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: sign_in_attempt(live_server.url, "alice", f"guess-{n}"),
                                range(GUESSES)))  # fmt: skip
    assert set(answers) <= {200, 429}, answers
    # Four failures answered, plus at most one racing check per worker thread.
    assert answers.count(429) >= GUESSES - 4 - 8
    assert sign_in_attempt(live_server.url, "alice", PASSWORD) == 429
    failed = AuditEvent.objects.filter(action="auth.sign_in_failed").count()
    locked = AuditEvent.objects.filter(action="auth.locked_out").count()
    # Every attempt is in the trail once: as a failure, or as a lock-out.
    assert failed + locked == GUESSES + 1
    # Failures below the limit are audited as such; concurrent ones that push the
    # count to the limit or past it are lock-outs (at most one per worker races).
    assert 1 <= failed <= 4 + 8
    assert not AuditEvent.objects.filter(action="auth.signed_in").exists()


def test_concurrent_token_guesses_lock_the_address_out(live_server, transactional_db):
    alice = User.objects.create_user("alice", "alice@example.com", PASSWORD)
    _, key = tokens.issue(alice, "ci")
    url = f"{live_server.url}/api/v1/applications/"

    def guess(n: int) -> int:
        headers = {"Authorization": f"Bearer gty_guess-{n:04d}"}
        return requests.get(url, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(guess, range(GUESSES)))
    assert set(answers) <= {401, 429}, answers
    assert answers.count(429) >= GUESSES - 4 - 8
    response = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 429
    assert response.json()["detail"].startswith("Too many failed sign-in attempts")
    event = AuditEvent.objects.filter(action="auth.locked_out").latest("seq")
    assert event.after["via"] == "api token"
    assert event.ip == "127.0.0.1"
    assert event.actor_name == "anonymous"
