"""manage.py register_release"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from deployments.models import Artifact, Release
from portal.core.models import AuditEvent
from tests.conftest import image

SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")


def register(*args: str) -> str:
    out = StringIO()
    call_command("register_release", *args, stdout=out)
    return out.getvalue()


def artifact_args(**overrides: str) -> list[str]:
    refs = {s: image(s, "c") for s in SERVICES} | overrides
    return [arg for slug, ref in refs.items() for arg in ("--artifact", f"{slug}={ref}")]


def test_it_registers_and_prints_the_id(catalog):
    output = register("fraud-detector", "2.0.0", *artifact_args(), "--notes", "New model",
                      "--commit", "abc1234", "--user", "alice")  # fmt: skip
    release = Release.objects.get()
    assert output.strip() == str(release.pk)
    assert release.version == "2.0.0"
    assert release.notes == "New model"
    assert release.commit == "abc1234"
    assert release.created_by.username == "alice"
    assert release.artifact_map() == {s: image(s, "c") for s in SERVICES}
    event = AuditEvent.objects.get(action="release.registered")
    assert event.actor_name == "alice"
    assert event.application_id == catalog.pk


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fraud-detector", "2.0.0", *artifact_args(**{"fraud-ml": "fraud-ml:latest"})],
         "artifacts.fraud-ml: "),
        (["fraud-detector", "2.0.0", "--artifact", f"fraud-api={image('fraud-api')}"],
         "artifacts: Missing an image"),
        (["fraud-detector", "not ok!", *artifact_args()], "version: "),
        (["fraud-detector", "2.0.0", *artifact_args(), "--commit", "zzz"], "commit: "),
        (["ledger", "2.0.0", *artifact_args()], "application: no application 'ledger'"),
        (["fraud-detector", "2.0.0", "--artifact", "fraud-api"], "--artifact: 'fraud-api'"),
    ],
)  # fmt: skip
def test_it_names_the_field_and_writes_nothing(catalog, args, message):
    with pytest.raises(CommandError, match=message):
        register(*args, "--user", "alice")
    assert not Release.objects.exists()
    assert not Artifact.objects.exists()
    assert not AuditEvent.objects.filter(action="release.registered").exists()


def test_it_refuses_a_duplicate_version(release):
    with pytest.raises(CommandError, match="version: .*already registered"):
        register("fraud-detector", "1.4.0", *artifact_args(), "--user", "alice")
    assert Release.objects.count() == 1


def test_it_refuses_a_user_without_the_deployer_role(catalog):
    with pytest.raises(CommandError, match="deployer role"):
        register("fraud-detector", "2.0.0", *artifact_args(), "--user", "dave")
    assert not Release.objects.exists()


def test_it_refuses_an_unknown_user(catalog):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        register("fraud-detector", "2.0.0", *artifact_args(), "--user", "nobody")
