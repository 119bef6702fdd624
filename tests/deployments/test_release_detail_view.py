"""A release: its images, where it runs, and the way to deploy it."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deployments.models import Deployment
from tests.conftest import env
from tests.environments.ui import browser, succeed  # noqa: F401


def url(release) -> str:
    return reverse("release-detail", args=[release.pk])


def test_it_shows_images_with_digests(users, release):
    response = browser(users["dave"]).get(url(release))
    assert response.status_code == 200
    html = response.content.decode()
    for artifact in release.artifacts.all():
        assert artifact.digest in html
    assert "3f9c2ab" in html
    assert "Bedrock timeout raised" in html


def test_it_shows_where_it_runs(release, users, catalog):
    succeed(Deployment.request(release, env(catalog, "dev"), users["alice"], "go"))
    response = browser(users["dave"]).get(url(release))
    assert [e.slug for e in response.context["runs_in"]] == ["dev"]
    assert len(response.context["deployments"]) == 1


def test_it_links_deployers_to_request_a_deployment(users, release):
    link = reverse("deployment-new") + f"?release={release.pk}"
    assert link in browser(users["alice"]).get(url(release)).content.decode()
    assert link not in browser(users["dave"]).get(url(release)).content.decode()


def test_it_keeps_a_constant_number_of_queries(release, users, catalog):
    """However many deployments the table lists: each row's environment and
    application come with the rows, not one query per row."""
    client = browser(users["dave"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url(release)).status_code == 200
        return len(captured)

    succeed(Deployment.request(release, env(catalog, "dev"), users["alice"], "go"))
    one = queries()
    for slug in ("staging", "dev", "staging"):
        succeed(Deployment.request(release, env(catalog, slug), users["alice"], "go"))
    assert queries() == one <= 10  # one of them reads where it was rolled back from


def test_it_hides_releases_of_applications_without_a_role(users, release):
    assert browser(users["mallory"]).get(url(release)).status_code == 404
    assert browser(users["mallory"]).get(reverse("release-detail", args=[999])).status_code == 404


def test_it_refuses_post(users, release):
    assert browser(users["alice"]).post(url(release)).status_code == 405


def test_it_needs_sign_in(client, release):
    assert client.get(url(release))["Location"].startswith(reverse("login"))
