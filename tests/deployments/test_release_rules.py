"""Release registration: pinned images, one per service, immutable, unique versions."""

from __future__ import annotations

import pytest

from deployments.models import Artifact, Release
from portal.core.models import AuditEvent
from portal.core.roles import Conflict, Forbidden, PolicyError
from tests.conftest import image

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def artifacts(**overrides) -> dict[str, str]:
    refs = {s: image(s) for s in SERVICES}
    refs.update(overrides)
    return refs


def test_it_registers_and_audits(catalog, users):
    release = Release.register(catalog, "1.5.0", artifacts(), users["alice"], commit="ABCDEF1")
    assert release.artifact_map() == artifacts()
    assert release.commit == "abcdef1"
    event = AuditEvent.objects.get(action="release.registered")
    assert event.actor_name == "alice"
    assert event.after["artifacts"]["fraud-ml"] == image("fraud-ml")
    assert event.application_id == catalog.pk


@pytest.mark.parametrize(
    ("refs", "field"),
    [
        (artifacts(**{"fraud-api": "fraud-api:latest"}), "artifacts.fraud-api"),
        (artifacts(**{"fraud-api": "fraud-api@sha256:abc"}), "artifacts.fraud-api"),
        ({"fraud-api": image("fraud-api")}, "artifacts"),
        (artifacts(**{"fraud-cache": image("fraud-cache")}), "artifacts"),
        ("not a mapping", "artifacts"),
    ],
)
def test_it_refuses_bad_artifacts_naming_the_field(catalog, users, refs, field):
    with pytest.raises(PolicyError) as excinfo:
        Release.register(catalog, "1.5.0", refs, users["alice"])
    assert excinfo.value.field == field
    assert not Release.objects.exists() and not Artifact.objects.exists()


@pytest.mark.parametrize(("version", "commit", "field"), [
    ("", "", "version"), ("1.0 beta", "", "version"), ("1.0.0", "xyz", "commit"),
])  # fmt: skip
def test_it_refuses_bad_versions_and_commits(catalog, users, version, commit, field):
    with pytest.raises(PolicyError) as excinfo:
        Release.register(catalog, version, artifacts(), users["alice"], commit=commit)
    assert excinfo.value.field == field


def test_a_duplicate_version_is_a_conflict(release, users, catalog):
    with pytest.raises(Conflict) as excinfo:
        Release.register(catalog, release.version, artifacts(), users["alice"])
    assert excinfo.value.status_code == 409
    assert Release.objects.count() == 1


def test_only_deployers_register(catalog, users):
    for name in ("dave", "bob", "mallory"):
        with pytest.raises(Forbidden):
            Release.register(catalog, "9.9.9", artifacts(), users[name])


def test_releases_are_immutable(release):
    release.notes = "rewritten history"
    with pytest.raises(PolicyError, match="immutable"):
        release.save()
