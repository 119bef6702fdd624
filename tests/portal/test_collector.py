"""The servers' entry points tune the garbage collector once the application
is loaded (portal/core/collector.py); each is imported in a fresh
interpreter, as uvicorn or a WSGI server would."""

import os
import subprocess
import sys

import pytest

from portal.core.collector import YOUNG_THRESHOLD

PROBE = """
import gc, importlib, json, sys
before = gc.get_freeze_count()
importlib.import_module(sys.argv[1])
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "threshold": gc.get_threshold()}))
"""


@pytest.mark.parametrize("entry_point", ["portal.asgi", "portal.wsgi"])
def test_the_entry_point_freezes_what_it_loaded_and_raises_the_threshold(entry_point):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, entry_point],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"] == 0
    # The loaded application (Django, the apps, the URL conf) is frozen: far
    # more than the interpreter's own start leaves.
    assert seen["frozen"] > 50_000
    assert seen["threshold"] == [YOUNG_THRESHOLD, 10, 10]
