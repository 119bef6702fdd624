"""Faults: the Terraform binary missing (TERRAFORM_BIN pointing nowhere) and
the provider mirror missing (TF_CLI_CONFIG_FILE naming an empty mirror), in
the worker's environment. Required: the plan fails at plan time, saying so in
words a release manager can act on; never "Internal error", never a request
left in `planning`.
"""

from __future__ import annotations

import time

import pytest

from deployments.choices import Status, StepStatus
from deployments.models import Deployment
from portal.core.models import AuditEvent
from tests.conftest import env
from tests.faults.conftest import suite_database_url
from tests.faults.processes import portal_env, record
from tests.faults.test_redis_down_on_request import terraform_process
from tests.polling import wait_for
from tests.runners.conftest import terraform_cli_config  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def empty_mirror(base) -> str:
    """A CLI configuration whose filesystem mirror holds no provider."""
    (base / "empty-mirror").mkdir()
    config = base / "empty-mirror.tfrc"
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{base / "empty-mirror"}"\n'
        '    include = ["registry.terraform.io/hashicorp/null"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n}\n'
    )
    return str(config)


@pytest.mark.parametrize("fault", ["binary missing", "provider mirror empty"])
def test_a_plan_without_terraform_or_its_provider_fails_saying_so(
    fault,
    catalog,
    release,
    users,
    portal,
    redis_server,
    tmp_path,
    terraform_cli_config,  # noqa: F811
):
    dev = env(catalog, "dev")
    terraform_process(dev, tmp_path)
    if fault == "binary missing":
        broken = {"TERRAFORM_BIN": str(tmp_path / "nowhere" / "terraform"),
                  "TF_CLI_CONFIG_FILE": str(terraform_cli_config)}  # fmt: skip
        expected = ["Terraform is not installed", "TERRAFORM_BIN", str(tmp_path / "nowhere")]
    else:
        broken = {"TF_CLI_CONFIG_FILE": empty_mirror(tmp_path)}
        expected = ["could not install registry.terraform.io/hashicorp/null",
                    str(tmp_path / "empty-mirror"), "TF_CLI_CONFIG_FILE"]  # fmt: skip
    portal.env = portal_env(
        database_url=suite_database_url(), redis_url=redis_server.url, workdir=tmp_path, **broken
    )
    portal.worker()

    requested_at = time.monotonic()
    deployment = Deployment.request(release, dev, users["alice"], "Bedrock timeout fix")
    assert deployment.status == Status.PLANNING
    failed = wait_for(
        lambda: Deployment.objects.filter(pk=deployment.pk, status=Status.FAILED).exists(), 120
    )
    took = time.monotonic() - requested_at
    assert failed, portal.logs()

    deployment.refresh_from_db()
    plan = deployment.step_runs.get(phase="plan")
    assert plan.status == StepStatus.FAILED
    for words in expected:
        assert words in plan.error and words in deployment.error, deployment.error
    assert deployment.error.startswith("Planning failed: ")
    assert "Internal error" not in deployment.error
    assert AuditEvent.objects.filter(
        action="deployment.failed", target_id=str(deployment.pk)
    ).exists()
    record(f"terraform {fault}", failed_at="plan time", failed_after_request_s=round(took, 1),
           message=deployment.error)  # fmt: skip
