"""Session fixtures for the step runner tests: the sandbox's real components
(moto server, Terraform with its provider mirror) and the FAKE Kubernetes API.

Runner tests use plain `StepContext`s, not the database: they are about what
the runners do to the infrastructure.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deployments import sandbox
from deployments.fake_kube_api import FakeKubeApi
from deployments.runners.base import StepContext
from portal.cloud.aws import AwsAccess
from portal.cloud.kube import KubeAccess

IMAGES = {
    service: f"123456789012.dkr.ecr.ca-central-1.amazonaws.com/{service}@sha256:{char * 64}"
    for service, char in (("fraud-api", "1"), ("fraud-ml", "2"), ("fraud-worker", "3"))
}
_names = itertools.count(1)


@dataclass
class LogRecorder:
    """Collects what a runner logs, with the moment each line arrived."""

    lines: list[tuple[float, str, str]] = field(default_factory=list)

    def __call__(self, text: str, stream: str = "stdout") -> None:
        self.lines.append((time.monotonic(), stream, text))

    @property
    def text(self) -> str:
        return "\n".join(line for _, _, line in self.lines)


@pytest.fixture(scope="session")
def moto_endpoint():
    server, endpoint = sandbox.start_moto()
    yield endpoint
    server.stop()


@pytest.fixture
def demo_aws(moto_endpoint) -> dict:
    """Fresh demo resources under a unique environment name, so tests don't
    see each other's task definitions, listener weights or alarm states."""
    environment = f"t{next(_names)}"
    resources = sandbox.create_demo_aws(moto_endpoint, environment)
    return {**resources, "environment": environment}


@pytest.fixture(scope="session")
def kube_api():
    api = FakeKubeApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="session")
def terraform_cli_config(tmp_path_factory) -> Path:
    return sandbox.setup_terraform_mirror(tmp_path_factory.mktemp("terraform"))


@pytest.fixture
def make_ctx(tmp_path, moto_endpoint, kube_api):
    """Build a StepContext for a config, pointed at the sandbox."""

    def build(config: dict, **overrides) -> StepContext:
        values = {
            "config": config,
            "workdir": tmp_path / "work",
            "log": LogRecorder(),
            "cancelled": threading.Event(),
            "environment_name": "staging",
            "release_version": "1.4.0",
            "artifacts": dict(IMAGES),
            "aws": AwsAccess(endpoint_url=moto_endpoint),
            "kube_api_client": KubeAccess(host=kube_api.url),
        }
        values.update(overrides)
        values["workdir"].mkdir(parents=True, exist_ok=True)
        return StepContext(**values)

    return build
