"""Fixtures for the audit trail's tests: a trail with events in every scope."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from deployments.models import Deployment
from environments.models import Application, Environment
from portal.core import audit
from tests.conftest import env


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")


@pytest.fixture
def other_app(db) -> Application:
    """An application nobody but the superuser can see."""
    app = Application.objects.create(slug="ledger", name="Ledger")
    Environment.objects.create(application=app, slug="production", name="Production", order=1)
    return app


@pytest.fixture
def trail(release, users, other_app) -> dict:
    """A deployment request in fraud-detector/staging and an event in ledger."""
    deployment = Deployment.request(
        release, env(release.application, "staging"), users["alice"], "Bedrock timeout fix"
    )
    ledger_env = other_app.environments.get()
    ledger_event = audit.record(
        "deployment.requested", ("deployments.deployment", "999", "ledger 9.9.9"),
        environment=ledger_env, actor=users["erin"], after={"reason": "ledger only"},
    )  # fmt: skip
    return {"deployment": deployment, "ledger_event": ledger_event}
