"""Deployments in the user's environments, filtered by status and environment."""

from __future__ import annotations

from django.urls import reverse

from deployments.choices import Status
from deployments.models import Deployment
from environments.models import Application, Environment
from tests.conftest import env
from tests.environments.ui import browser

URL = reverse("deployment-list")


def many(release, users, slug, count, status=Status.CANCELLED):
    environment = env(release.application, slug)
    Deployment.objects.bulk_create(
        Deployment(release=release, environment=environment, requested_by=users["alice"],
                   reason=f"r{n}", status=status) for n in range(count)
    )  # fmt: skip


def test_it_lists_deployments_with_their_status(release, users):
    deployment = Deployment.request(release, env(release.application, "staging"), users["alice"],
                                    "hotfix")  # fmt: skip
    response = browser(users["dave"]).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert reverse("deployment-detail", args=[deployment.pk]) in html
    assert '<span class="badge badge-amber">Awaiting approval</span>' in html


def test_it_filters_by_status_and_environment(release, users):
    many(release, users, "dev", 3, Status.SUCCEEDED)
    many(release, users, "staging", 2, Status.FAILED)
    client = browser(users["dave"])
    staging = env(release.application, "staging")
    assert len(client.get(URL + "?status=failed").context["page_obj"]) == 2
    assert len(client.get(URL + f"?environment={staging.pk}").context["page_obj"]) == 2
    both = client.get(URL + f"?environment={staging.pk}&status=succeeded")
    assert len(both.context["page_obj"]) == 0


def test_it_reports_a_bad_filter_next_to_its_field(release, users):
    many(release, users, "dev", 2)
    response = browser(users["dave"]).get(URL + "?status=bogus")
    assert response.status_code == 200
    assert "status" in response.context["form"].errors
    assert len(response.context["page_obj"]) == 2  # the bad filter is not applied


def test_it_shows_only_deployments_of_visible_environments(release, users):
    many(release, users, "dev", 2)
    assert len(browser(users["mallory"]).get(URL).context["page_obj"]) == 0
    hidden = Environment.objects.create(
        application=Application.objects.create(slug="ledger", name="Ledger"), slug="p",
        name="P", order=1,
    )  # fmt: skip
    response = browser(users["dave"]).get(URL + f"?environment={hidden.pk}")
    assert "environment" in response.context["form"].errors


def test_it_paginates_with_constant_queries(release, users,
                                            django_assert_max_num_queries):  # fmt: skip
    many(release, users, "dev", 20)
    many(release, users, "staging", 20)
    client = browser(users["dave"])
    with django_assert_max_num_queries(6):
        response = client.get(URL)
    assert len(response.context["page_obj"]) == 25
    assert len(client.get(URL + "?page=2").context["page_obj"]) == 15


def test_it_refuses_post(users, release):
    assert browser(users["dave"]).post(URL).status_code == 405


def test_it_needs_sign_in(client, db):
    assert client.get(URL)["Location"].startswith(reverse("login"))
