"""The production files (docker-compose.yml, Dockerfile) can't be started on
the build machines (no Docker engine), so what can be checked here is: they
parse, web runs what the image runs, and every command names something this
code base has (the ASGI application, the queues, the cron module, uvicorn's
options)."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from django.conf import settings
from uvicorn.main import main as uvicorn_main

from tests.servers import image_command

ROOT = Path(settings.BASE_DIR)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_web_runs_what_the_image_runs():
    assert compose()["services"]["web"]["command"] == image_command()


def test_the_web_command_names_the_application_and_options_uvicorn_has():
    command = image_command()
    assert command[0] == "uvicorn"
    module, attribute = command[-1].split(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    options = {param.opts[0] for param in uvicorn_main.params if param.opts}
    secondary = {opt for param in uvicorn_main.params for opt in param.secondary_opts}
    for word in command[1:-1]:
        if word.startswith("--"):
            assert word in options | secondary, f"uvicorn has no option {word}"


def test_workers_serve_every_queue_and_the_scheduler_runs_the_cron_module():
    services = compose()["services"]
    worker = services["worker"]["command"]
    assert worker[:3] == ["python", "manage.py", "rqworker"]
    assert set(worker[3:]) == set(settings.RQ_QUEUES)
    scheduler = services["scheduler"]["command"]
    assert scheduler[:3] == ["python", "manage.py", "housekeeping"]
    importlib.import_module(scheduler[3])
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
