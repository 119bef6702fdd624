"""An application's releases, newest first, 25 a page."""

from __future__ import annotations

from django.urls import reverse

from deployments.models import Release
from tests.conftest import image
from tests.environments.ui import browser

URL = reverse("release-list", args=["fraud-detector"])
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def register(catalog, users, version):
    return Release.register(catalog, version, {s: image(s) for s in SERVICES}, users["alice"])


def test_it_lists_releases(users, release):
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "1.4.0" in html
    assert reverse("release-detail", args=[release.pk]) in html


def test_it_invites_deployers_to_register_the_first(users, catalog):
    html = browser(users["alice"]).get(URL).content.decode()
    assert "No releases yet" in html
    assert reverse("release-new", args=["fraud-detector"]) in html
    assert (
        reverse("release-new", args=["fraud-detector"])
        not in browser(users["dave"]).get(URL).content.decode()
    )


def test_it_paginates_with_constant_queries(catalog, users,
                                            django_assert_max_num_queries):  # fmt: skip
    for n in range(30):
        register(catalog, users, f"1.{n}.0")
    client = browser(users["dave"])
    with django_assert_max_num_queries(9):
        first = client.get(URL)
    assert len(first.context["page_obj"]) == 25
    assert "1.29.0" in first.content.decode()
    second = client.get(URL + "?page=2")
    assert [r.version for r in second.context["page_obj"]] == [f"1.{n}.0" for n in range(4, -1, -1)]


def test_it_hides_applications_without_a_role(users, release):
    assert browser(users["mallory"]).get(URL).status_code == 404


def test_it_refuses_post(users, release):
    assert browser(users["alice"]).post(URL).status_code == 405


def test_it_needs_sign_in(client, release):
    assert client.get(URL)["Location"].startswith(reverse("login"))
