#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

In a checkout where `make run` has set up the demo, a plain
`.venv/bin/python manage.py <command>` uses the demo's settings: its
database, its Redis and the keys in var/, as scripts/run.sh recorded them in
var/demo.env. Anything set in the environment wins; pointing DATABASE_URL at
another database (or setting DJANGO_SETTINGS_MODULE) leaves the demo's
settings out altogether, so its keys never meet another database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO_ENV = ROOT / "var" / "demo.env"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (as run.sh writes them); blank lines and # comments skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def demo_defaults(demo_env: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the demo's settings add to `environ` (none when it does not apply)."""
    if not demo_env.is_file() or environ.get("DJANGO_SETTINGS_MODULE"):
        return {}
    demo = read_env_file(demo_env)
    if environ.get("DATABASE_URL") and environ["DATABASE_URL"] != demo.get("DATABASE_URL"):
        return {}  # another database: none of the demo's keys or services
    return {key: value for key, value in demo.items() if key not in environ}


def main(demo_env: Path = DEMO_ENV) -> None:
    added = demo_defaults(demo_env, os.environ)
    if added:
        os.environ.update(added)
        print(f"manage.py: the demo's settings from {demo_env}", file=sys.stderr)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A missing or wrong setting (or key): the message names it, a traceback adds nothing.
        print(f"manage.py: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
