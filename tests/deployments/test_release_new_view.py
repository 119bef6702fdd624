"""Registering a release: one image pinned by digest per service."""

from __future__ import annotations

from django.urls import reverse

from deployments.models import Release
from tests.conftest import image
from tests.environments.ui import browser, last_event

URL = reverse("release-new", args=["fraud-detector"])
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def form(**changes) -> dict:
    data = {"version": "1.5.0", "commit": "3F9C2AB", "notes": "Timeout raised"}
    data.update({f"artifact_{s}": image(s, "d") for s in SERVICES})
    data.update(changes)
    return data


def test_it_shows_one_image_field_per_service(users, catalog):
    response = browser(users["alice"]).get(URL)
    assert response.status_code == 200
    for service in SERVICES:
        assert f'name="artifact_{service}"'.encode() in response.content


def test_it_registers_a_release_and_audits_it(catalog, users):
    response = browser(users["alice"]).post(URL, form())
    release = Release.objects.get(version="1.5.0")
    assert response.status_code == 302
    assert response["Location"] == reverse("release-detail", args=[release.pk])
    assert release.commit == "3f9c2ab"
    assert release.created_by == users["alice"]
    assert release.artifact_map() == {s: image(s, "d") for s in SERVICES}
    event = last_event("release.registered")
    assert event.target_id == str(release.pk)
    assert event.actor_id == users["alice"].pk
    assert event.request_id == response["X-Request-ID"]


def test_it_puts_a_duplicate_version_error_on_version(users, release):
    response = browser(users["alice"]).post(URL, form(version="1.4.0"))
    assert response.status_code == 400
    assert "already registered" in response.context["form"].errors["version"][0]
    assert Release.objects.count() == 1


def test_it_puts_an_unpinned_image_error_on_its_field(users, catalog):
    # Neither a digest nor a tag (tags are resolved: tests/deployments/test_image_checks.py).
    response = browser(users["alice"]).post(URL, form(**{"artifact_fraud-ml": "fraud-ml@latest"}))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "pin the image by digest" in errors["artifact_fraud-ml"][0]
    assert 'id="artifact_fraud-ml-error"' in response.content.decode()
    assert not Release.objects.exists()


def test_it_puts_a_bad_commit_error_on_commit(users, catalog):
    response = browser(users["alice"]).post(URL, form(commit="not-a-sha"))
    assert "commit" in response.context["form"].errors
    assert not Release.objects.exists()


def test_it_needs_every_image(users, catalog):
    response = browser(users["alice"]).post(URL, form(**{"artifact_fraud-worker": ""}))
    assert "artifact_fraud-worker" in response.context["form"].errors
    assert not Release.objects.exists()
    assert last_event("release.registered") is None


def test_it_is_forbidden_without_the_deployer_role(users, catalog):
    for name in ("dave", "bob"):
        response = browser(users[name]).post(URL, form())
        assert response.status_code == 403
    assert not Release.objects.exists()


def test_it_hides_applications_without_a_role(users, catalog):
    assert browser(users["mallory"]).post(URL, form()).status_code == 404
    assert not Release.objects.exists()


def test_it_refuses_other_methods(users, catalog):
    assert browser(users["alice"]).put(URL).status_code == 405


def test_it_needs_sign_in(client, catalog):
    assert client.post(URL, form())["Location"].startswith(reverse("login"))
    assert not Release.objects.exists()


def test_it_shows_every_error_at_once(users, catalog):
    response = browser(users["alice"]).post(URL, form(**{
        "version": "-bad", "commit": "xyz", "notes": "n" * 10_001,
        "artifact_fraud-ml": "fraud-ml@latest",
    }))  # fmt: skip

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"version", "commit", "notes", "artifact_fraud-ml"}
    assert "Use 1-64 letters" in errors["version"][0]
    assert "7 to 40 hexadecimal digits" in errors["commit"][0]
    assert "10000" in errors["notes"][0] or "10,000" in errors["notes"][0]
    assert not Release.objects.exists()


def test_it_says_a_version_is_taken_with_the_other_errors(users, release):
    response = browser(users["alice"]).post(URL, form(version="1.4.0", commit="nothex!"))
    errors = response.context["form"].errors
    assert "already registered" in errors["version"][0]
    assert "hexadecimal" in errors["commit"][0]
