"""The admin checks a step's config with its runner: a typo is refused on the
config field, naming the key, before it can fail a deployment."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from environments.models import Step
from portal.core.models import AuditEvent
from tests.admin.conftest import admin_form_data
from tests.conftest import env


@pytest.fixture
def url(catalog) -> str:
    return reverse("admin:environments_environment_change", args=[env(catalog, "staging").pk])


def post_step(admin_client, url: str, kind: str, config) -> object:
    data = admin_form_data(admin_client.get(url))
    data.update({
        "steps-TOTAL_FORMS": "1", "steps-0-order": "1", "steps-0-name": "Smoke test",
        "steps-0-kind": kind, "steps-0-config": json.dumps(config),
    })  # fmt: skip
    return admin_client.post(url, data)


def step_errors(response) -> dict:
    return response.context["inline_admin_formsets"][0].formset.forms[0].errors


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("http_check", {"url": "https://staging/health"}, "url: unknown key"),
        ("http_check", {"urls": "https://staging/health"}, "urls: "),
        ("command", {"argv": []}, "argv: must name a program"),
        ("command", ["echo"], "config: must be an object"),
        ("http_check", {"smoke": {"url": "https://x", "method": "DELETE"}}, "smoke.method: "),
    ],
)
def test_it_refuses_a_bad_config_naming_the_key(admin_client, url, kind, config, message):
    response = post_step(admin_client, url, kind, config)
    assert response.status_code == 200
    errors = step_errors(response)
    assert list(errors) == ["config"]
    assert errors["config"][0].startswith(message), errors["config"]
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Step.objects.exists()
    assert not AuditEvent.objects.filter(action="admin.step.created").exists()


def test_it_saves_a_valid_config_as_typed(admin_client, url, catalog):
    config = {"urls": ["https://staging.fraud.example/health"], "timeout_seconds": 60}
    response = post_step(admin_client, url, "http_check", config)
    assert response.status_code == 302
    step = Step.objects.get(environment=env(catalog, "staging"))
    assert (step.kind, step.config) == ("http_check", config)
    event = AuditEvent.objects.filter(action="admin.step.created").latest("seq")
    assert event.after["config"] == config


def test_it_checks_an_edited_step_too(admin_client, url, catalog):
    step = Step.objects.create(environment=env(catalog, "staging"), order=1, name="Migrate",
                               kind="command", config={"argv": ["manage", "migrate"]})  # fmt: skip
    data = admin_form_data(admin_client.get(url))
    data["steps-0-config"] = json.dumps({"argv": ["manage", "migrate"], "timeout": 5})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert step_errors(response)["config"][0].startswith("timeout: unknown key")
    step.refresh_from_db()
    assert step.config == {"argv": ["manage", "migrate"]}
