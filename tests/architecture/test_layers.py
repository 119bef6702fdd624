"""scripts/check_layers.py: the imports follow the layers, and the check
catches each kind of violation (it can fail)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def layers():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts/check_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ("portal", "portal/core", "portal/cloud", "environments", "deployments"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_gantrys_own_imports_follow_the_layers(layers):
    assert layers.check() == []


def test_it_names_an_import_up_a_layer(layers, tmp_path):
    root = tree(tmp_path, {
        "environments/costs.py": "from deployments.models import CostEstimate\n",
        "deployments/models.py": "CostEstimate = 1\n",
    })  # fmt: skip

    problems = layers.check(root)

    assert problems == [
        "environments/costs.py:1: environments.costs (environments) imports "
        "deployments.models (deployments), a layer above it"
    ]


def test_the_base_may_not_import_the_shell_nor_cloud_access(layers, tmp_path):
    root = tree(tmp_path, {
        "portal/core/audit.py": "from portal import dashboard\nimport portal.cloud.aws\n",
        "portal/dashboard.py": "",
        "portal/cloud/aws.py": "",
    })  # fmt: skip

    problems = layers.check(root)

    assert len(problems) == 2
    assert "portal.core.audit (base) imports portal.dashboard (shell)" in problems[0]
    assert "imports portal.cloud.aws (cloud)" in problems[1]


def test_an_import_under_type_checking_still_counts(layers, tmp_path):
    root = tree(tmp_path, {
        "deployments/runners.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from portal.cards import Card\n"
        ),
        "portal/cards.py": "",
    })  # fmt: skip

    assert "a layer above it" in layers.check(root)[0]


def test_it_names_a_cycle_within_a_layer(layers, tmp_path):
    root = tree(tmp_path, {
        "deployments/models.py": "from deployments import jobs\n",
        "deployments/jobs.py": "from deployments.models import Deployment\n",
    })  # fmt: skip

    assert layers.check(root) == [
        "import cycle: deployments.jobs -> deployments.models -> deployments.jobs"
    ]


def test_a_late_import_is_refused_but_not_in_an_apps_ready(layers, tmp_path):
    root = tree(tmp_path, {
        "deployments/models.py": "def dispatch():\n    from deployments import jobs\n",
        "deployments/jobs.py": "",
        "deployments/apps.py": (
            "class Config:\n    def ready(self):\n        from deployments import jobs\n"
        ),
        "deployments/costs.py": "def chart():\n    import json\n",  # not a project module
    })  # fmt: skip

    problems = layers.check(root)

    assert len(problems) == 1
    assert problems[0].startswith("deployments/models.py:2: deployments.models imports ")
    assert "inside a function" in problems[0]


def test_relative_imports_are_resolved(layers, tmp_path):
    root = tree(tmp_path, {
        "environments/alarms.py": "from ..deployments import jobs\n",
        "deployments/jobs.py": "",
    })  # fmt: skip

    assert "imports deployments.jobs (deployments), a layer above it" in layers.check(root)[0]
