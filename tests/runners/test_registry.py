"""The registry the engine and the admin use: one runner per step kind."""

from __future__ import annotations

import pytest

from deployments.runners import RUNNERS, get_runner
from environments.choices import StepKind
from environments.steps import ConfigError, validate_step_config


def test_it_has_a_runner_for_every_step_kind():
    assert set(RUNNERS) == set(StepKind.values)
    assert [kind for kind, runner in RUNNERS.items() if runner.has_plan] == ["terraform"]


def test_it_returns_the_normalized_config_with_defaults():
    config = validate_step_config("http_check", {"urls": ["https://x/health"]})

    assert config["timeout_seconds"] == 120 and config["smoke"] is None


def test_it_names_the_key_of_a_bad_config():
    with pytest.raises(ConfigError) as error:
        validate_step_config("ecs_rolling", {"cluster": "c", "services": ["a"], "typo": 1})

    assert error.value.key == "typo"
    assert isinstance(error.value, ValueError)


def test_it_refuses_an_unknown_kind():
    with pytest.raises(ConfigError, match="unknown step kind 'helm'"):
        get_runner("helm")
