"""The tokens page: list your tokens, issue one and see its key once."""

from __future__ import annotations

import html
import re

from django.urls import reverse
from rest_framework.test import APIClient

from portal.core import tokens
from portal.core.models import ApiToken
from portal.core.tokens import hash_token
from tests.environments.ui import browser, last_event


def test_it_lists_only_your_tokens(users):
    tokens.issue(users["alice"], "ci-pipeline")
    tokens.issue(users["bob"], "bobs-laptop")
    html = browser(users["alice"]).get(reverse("tokens")).content.decode()
    assert "ci-pipeline" in html
    assert "bobs-laptop" not in html


def test_it_shows_an_empty_state(users):
    html = browser(users["alice"]).get(reverse("tokens")).content.decode()
    assert "No tokens yet" in html


def test_it_issues_a_token_and_shows_the_key_once(users):
    client = browser(users["alice"])
    response = client.post(reverse("tokens"), {"name": "ci-pipeline"})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    key = response.context["new_key"]
    assert key.startswith("gty_")
    assert key in response.content.decode()
    assert "will not be shown again" in response.content.decode()
    token = ApiToken.objects.get(user=users["alice"])
    assert token.name == "ci-pipeline"
    assert token.key_hash == hash_token(key)
    event = last_event("token.issued")
    assert event.actor_id == users["alice"].pk
    assert event.request_id == response["X-Request-ID"]
    assert key not in str(event.after)
    # The key is never shown again.
    assert key not in client.get(reverse("tokens")).content.decode()


def test_it_refuses_a_token_without_a_name(users):
    response = browser(users["alice"]).post(reverse("tokens"), {"name": "   "})
    assert response.status_code == 400
    assert "name" in response.context["form"].errors
    assert not ApiToken.objects.exists()
    assert last_event("token.issued") is None


def test_it_refuses_other_methods(users):
    assert browser(users["alice"]).put(reverse("tokens")).status_code == 405


def test_it_needs_sign_in(client, db):
    response = client.post(reverse("tokens"), {"name": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not ApiToken.objects.exists()


def test_the_example_it_shows_works_against_the_api(users, catalog):
    """The page's example request, with the new key filled in, is answered."""
    response = browser(users["alice"]).post(reverse("tokens"), {"name": "ci-pipeline"})
    page = response.content.decode()
    example = re.search(r'data-testid="token-example">(.*?)</code>', page, re.S)
    assert example, "the page shows an example request"
    command = html.unescape(example.group(1))
    header = re.search(r"-H '([^']+)'", command).group(1)
    name, _, value = header.partition(": ")
    assert name == "Authorization"
    assert response.context["new_key"] in value
    path = re.search(r"https?://[^/]+(/api/v1/\S*)", command).group(1)
    answer = APIClient().get(path, HTTP_AUTHORIZATION=value)
    assert answer.status_code == 200, answer.content
