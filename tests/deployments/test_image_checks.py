"""Images that exist and are what they claim: a service's allowed repositories,
digests checked against the registry before a deployment is planned, tags
resolved to digests. ECR through a moto server; other registries through the
OCI distribution API of a real registry (Debian's docker-registry, started
here on a free port)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from django.urls import reverse

from deployments import sandbox
from deployments.models import Deployment, Release
from environments.choices import ImageVerification
from environments.models import Service
from portal.cloud import registries
from portal.core.roles import PolicyError
from tests.api.conftest import api  # noqa: F401
from tests.conftest import ECR, env
from tests.runners.conftest import moto_endpoint  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
REGISTRY_BIN = "/usr/bin/docker-registry"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def declared(catalog):
    """fraud-detector's services declare their ECR repositories (as the demo's do)."""
    for service in Service.objects.filter(application=catalog):
        service.image_repositories = [f"{ECR}/{service.slug}"]
        service.save()
    return catalog


@pytest.fixture
def in_ecr(moto_endpoint, monkeypatch):  # noqa: F811
    """Put images into the sandbox's ECR; returns their digest-pinned refs."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)

    def put(version: str) -> dict[str, str]:
        refs = {s: f"{ECR}/{s}@{digest_of(s + version)}" for s in SERVICES}
        for ref in refs.values():
            assert sandbox.put_demo_image(moto_endpoint, ref, tag=version)
        return refs

    return put


def test_an_image_from_another_repository_is_refused_naming_the_service(declared, users, api):
    evil = {s: f"{ECR}/{s}@sha256:" + "a" * 64 for s in SERVICES}
    evil["fraud-worker"] = "docker.io/evil/fraud-worker@sha256:" + "a" * 64

    with pytest.raises(PolicyError) as refused:
        Release.register(declared, "6.6.6", evil, users["alice"])
    response = api("alice").post(
        reverse("api-release-list"),
        {"application": "fraud-detector", "version": "6.6.6", "artifacts": evil},
        format="json",
    )

    assert refused.value.field == "artifacts.fraud-worker"
    assert "docker.io/evil/fraud-worker is not where fraud-worker's images come from" in (
        refused.value.message
    )
    assert response.status_code == 400 and "fraud-worker" in response.json()["detail"]
    assert not Release.objects.filter(version="6.6.6").exists()


def test_a_request_checks_each_digest_in_ecr(declared, users, in_ecr):
    staging = env(declared, "staging")
    staging.image_verification = ImageVerification.BLOCK
    staging.save()
    there = Release.register(declared, "2.0.0", in_ecr("2.0.0"), users["alice"])
    missing = {s: f"{ECR}/{s}@{digest_of('never pushed ' + s)}" for s in SERVICES}
    absent = Release.register(declared, "2.0.1", missing, users["alice"])

    deployment = Deployment.request(there, staging, users["alice"], "verified")
    with pytest.raises(PolicyError, match=r"fraud-api: ECR has no .*fraud-api@sha256:"):
        Deployment.request(absent, staging, users["alice"], "not there")

    assert [c["found"] for c in deployment.image_checks] == [True, True, True]
    assert {c["service"] for c in deployment.image_checks} == set(SERVICES)
    assert not Deployment.objects.filter(release=absent).exists()


def test_an_unverifiable_image_blocks_or_warns_as_the_environment_says(
    declared, users, monkeypatch
):
    with socket.socket() as probe:  # an ECR endpoint that refuses connections
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{probe.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    release = Release.register(declared, "2.1.0", {s: f"{ECR}/{s}@{digest_of(s)}"
                                                   for s in SERVICES}, users["alice"])  # fmt: skip
    dev, staging = env(declared, "dev"), env(declared, "staging")
    dev.image_verification, staging.image_verification = "warn", "block"
    dev.save(), staging.save()

    warned = Deployment.request(release, dev, users["alice"], "registry is down")
    with pytest.raises(PolicyError, match="could not be verified.*deploys only images"):
        Deployment.request(release, staging, users["alice"], "registry is down")

    assert all(c["found"] is None and "ECR could not be reached" in c["reason"]
               for c in warned.image_checks)  # fmt: skip


def test_a_rollback_is_not_held_up_by_the_registry(declared, users):
    """Restoring service must not wait on a registry: rollbacks skip the check."""
    dev = env(declared, "dev")
    dev.image_verification = ImageVerification.BLOCK
    dev.save()
    release = Release.register(declared, "2.2.0", {s: f"{ECR}/{s}@{digest_of(s)}"
                                                   for s in SERVICES}, users["alice"])  # fmt: skip
    Deployment.objects.create(release=release, environment=dev, requested_by=users["alice"],
                              reason="ran", status="succeeded")  # fmt: skip
    rollback = Deployment.request(release, dev, users["alice"], "back", kind="rollback")
    assert rollback.image_checks == []


def test_a_tag_is_resolved_to_its_digest_before_anything_is_saved(declared, users, in_ecr, api):
    pinned = in_ecr("3.0.0")
    tagged = {s: f"{ECR}/{s}:3.0.0" for s in SERVICES}
    client = api("alice")

    created = client.post(reverse("api-release-list"), {
        "application": "fraud-detector", "version": "3.0.0", "artifacts": tagged,
    }, format="json")  # fmt: skip
    unknown = client.post(reverse("api-release-list"), {
        "application": "fraud-detector", "version": "3.0.1",
        "artifacts": {**tagged, "fraud-ml": f"{ECR}/fraud-ml:no-such-tag"},
    }, format="json")  # fmt: skip

    assert created.status_code == 201, created.json()
    assert created.json()["artifacts"] == pinned
    assert unknown.status_code == 400
    assert "fraud-ml: tag" in unknown.json()["detail"] and "no-such-tag" in unknown.json()["detail"]
    assert not Release.objects.filter(version="3.0.1").exists()


def test_a_tag_is_only_looked_up_for_a_deployer_in_a_declared_repository(declared, users, api,
                                                                          monkeypatch):  # fmt: skip
    """Resolving a tag makes Gantry call a registry: never a host the caller picked,
    never for someone who may not register releases."""
    asked = []
    monkeypatch.setattr(registries, "lookup", lambda name: asked.append(name))
    tagged = {s: f"{ECR}/{s}:4.0.0" for s in SERVICES}
    elsewhere = {**tagged, "fraud-ml": "10.0.0.5:5000/fraud-ml:4.0.0"}

    foreign = api("alice").post(reverse("api-release-list"), {
        "application": "fraud-detector", "version": "4.0.0", "artifacts": elsewhere,
    }, format="json")  # fmt: skip
    viewer = api("dave").post(reverse("api-release-list"), {
        "application": "fraud-detector", "version": "4.0.0", "artifacts": tagged,
    }, format="json")  # fmt: skip

    assert foreign.status_code == 400
    assert (
        "10.0.0.5:5000/fraud-ml is not where fraud-ml's images come from"
        in (foreign.json()["detail"])
    )
    assert viewer.status_code == 403
    assert asked == []
    assert not Release.objects.filter(version="4.0.0").exists()


def test_the_release_form_shows_the_resolved_digests_then_registers(declared, users, in_ecr,
                                                                     client):  # fmt: skip
    pinned = in_ecr("3.1.0")
    client.force_login(users["alice"])
    url = reverse("release-new", args=["fraud-detector"])
    data = {"version": "3.1.0", **{f"artifact_{s}": f"{ECR}/{s}:3.1.0" for s in SERVICES}}

    preview = client.post(url, data)
    assert preview.status_code == 200 and not Release.objects.filter(version="3.1.0").exists()
    page = preview.content.decode()
    assert all(pinned[s] in page for s in SERVICES)
    confirmed = client.post(url, {**data, **{f"artifact_{s}": pinned[s] for s in SERVICES}})

    assert confirmed.status_code == 302
    assert Release.objects.get(version="3.1.0").artifact_map() == pinned


# -- other registries: the OCI distribution API of a real registry ---------------------


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory):
    """Debian's docker-registry (the distribution registry) on a free port."""
    if not Path(REGISTRY_BIN).exists():
        pytest.skip("Debian's docker-registry is not installed (.ci/run installs it)")
    base = tmp_path_factory.mktemp("registry")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = base / "config.yml"
    config.write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(base / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))  # fmt: skip
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/v2/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(base, ignore_errors=True)


def push(registry: str, repository: str, tag: str) -> str:
    """Push a one-blob image through the distribution API; returns its manifest digest."""
    blob = b"{}"
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    start = urllib.request.Request(f"http://{registry}/v2/{repository}/blobs/uploads/",
                                   method="POST")  # fmt: skip
    with urllib.request.urlopen(start) as answer:
        location = answer.headers["Location"]
    separator = "&" if "?" in location else "?"
    upload = urllib.request.Request(
        f"{location}{separator}digest={blob_digest}", data=blob, method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    urllib.request.urlopen(upload).close()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(blob), "digest": blob_digest},
        "layers": [],
    }).encode()  # fmt: skip
    put = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        data=manifest,
        method="PUT",
        headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(put) as answer:
        return answer.headers["Docker-Content-Digest"]


def test_an_oci_registry_is_asked_by_digest_and_by_tag(oci_registry):
    digest = push(oci_registry, "fintech-ai/fraud-model", "2.1.0")

    by_digest = registries.lookup(
        registries.parse(f"{oci_registry}/fintech-ai/fraud-model@{digest}")
    )
    by_tag = registries.lookup(registries.parse(f"{oci_registry}/fintech-ai/fraud-model:2.1.0"))
    absent = registries.lookup(
        registries.parse(f"{oci_registry}/fintech-ai/fraud-model@sha256:" + "0" * 64)
    )
    no_tag = registries.lookup(registries.parse(f"{oci_registry}/fintech-ai/fraud-model:9.9.9"))

    assert (by_digest.found, by_digest.digest) == (True, digest)
    assert (by_tag.found, by_tag.digest) == (True, digest)
    assert absent.found is False and "HTTP 404" in absent.reason
    assert no_tag.found is False


def test_an_unreachable_registry_is_unknown_not_missing():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    answer = registries.lookup(registries.parse(f"127.0.0.1:{port}/app@sha256:" + "1" * 64))
    assert answer.found is None and "could not be reached" in answer.reason


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"{ECR}/fraud-api@sha256:" + "a" * 64, (ECR, "fraud-api", "sha256:" + "a" * 64)),
        (
            "registry.example.com:5000/team/app:1.2",
            ("registry.example.com:5000", "team/app", "1.2"),
        ),
        ("redis:7", ("registry-1.docker.io", "library/redis", "7")),
        ("bitnami/redis:7", ("registry-1.docker.io", "bitnami/redis", "7")),
    ],
)
def test_image_names_are_read_as_registries_read_them(image, expected):
    name = registries.parse(image)
    assert (name.registry, name.repository, name.reference) == expected


def test_a_name_without_tag_or_digest_is_refused():
    with pytest.raises(ValueError, match="names no tag and no digest"):
        registries.parse("registry.example.com/team/app")


def test_a_request_reads_the_rule_as_it_stands_not_the_callers_copy(declared, users,
                                                                    monkeypatch):  # fmt: skip
    """An environment object read before an admin turned checks on still gets them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # no registry answers
    pinned = {s: f"{ECR}/{s}@{digest_of(s)}" for s in SERVICES}
    release = Release.register(declared, "7.0.0", pinned, users["alice"])
    stale = env(declared, "staging")
    type(stale).objects.filter(pk=stale.pk).update(image_verification=ImageVerification.BLOCK)

    with pytest.raises(PolicyError, match="could not be verified|ECR has no"):
        Deployment.request(release, stale, users["alice"], "checked")
