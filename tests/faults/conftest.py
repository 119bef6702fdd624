"""Fixtures of the fault tests: a Redis, a PostgreSQL cluster, a moto server
of the test's own (tests/faults/processes.py), this process pointed at them,
and Gantry's processes started against them."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from channels.layers import channel_layers
from django.contrib.contenttypes.models import ContentType
from django.db import connection, connections

from tests.faults.processes import (
    MotoServer,
    Portal,
    PostgresCluster,
    RedisServer,
    portal_env,
)


def point_at_redis(settings, url: str) -> None:
    """This process' queues, cache and channel layers on `url` (restored by
    the `settings` fixture; django_rq reads RQ_QUEUES at each call)."""
    settings.REDIS_URL = url
    settings.RQ_QUEUES = {name: {**queue, "URL": url} for name, queue in settings.RQ_QUEUES.items()}
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": url}}
    layers = {}
    for alias, layer in settings.CHANNEL_LAYERS.items():
        config = {**layer["CONFIG"], "hosts": [{"address": url, "socket_timeout": None}]}
        if alias == "broadcast":  # pub/sub ignores the database: a prefix of its own
            config["prefix"] = f"{config['prefix'].rpartition('-db-')[0]}-db-faults-{os.getpid()}"
        layers[alias] = {**layer, "CONFIG": config}
    settings.CHANNEL_LAYERS = layers
    channel_layers.backends.clear()


@pytest.fixture
def redis_server(tmp_path, settings):
    """A redis-server of this test's own, which this process uses too."""
    server = RedisServer(tmp_path).start()
    point_at_redis(settings, server.url)
    yield server
    server.stop()
    channel_layers.backends.clear()


def suite_database_url() -> str:
    """pytest-django's test database, for processes started by a test."""
    return (
        urlsplit(os.environ["DATABASE_URL"])
        ._replace(path=f"/{connection.settings_dict['NAME']}")
        .geturl()
    )


@pytest.fixture
def postgres(transactional_db, django_db_blocker, tmp_path):
    """A PostgreSQL cluster of this test's own, migrated, which this process
    uses too from here on (fixtures requested after this one included)."""
    cluster = PostgresCluster().init()
    try:
        migrate = Portal(tmp_path, portal_env(database_url=cluster.url, redis_url="redis://127.0.0.1:1/0",
                                              workdir=tmp_path))  # fmt: skip
        process = migrate.manage("migrate", "--noinput", "-v", "0")
        if process.wait(timeout=300) != 0:
            raise RuntimeError(f"migrate failed:\n{migrate.logs()}")
        default = connections["default"]
        saved = dict(default.settings_dict)
        with django_db_blocker.unblock():
            default.close()
            default.close_pool()  # the suite database's: the next one opens on the cluster
            default.settings_dict.update(
                NAME="gantry", HOST="127.0.0.1", PORT=str(cluster.port), USER="postgres",
                PASSWORD="",
            )  # fmt: skip
            ContentType.objects.clear_cache()
            yield cluster
            connections.close_all()
            default.close_pool()
            default.settings_dict.clear()
            default.settings_dict.update(saved)
            ContentType.objects.clear_cache()
    finally:
        cluster.destroy()


@pytest.fixture
def moto_server(tmp_path):
    """moto's server as a process of this test's own. No MOTO_ECS_SERVICE_RUNNING:
    ECS services never report their tasks running, so a rollout waits."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    server = MotoServer(tmp_path, env)
    server.env.pop("MOTO_ECS_SERVICE_RUNNING", None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def portal(tmp_path, transactional_db):
    """Gantry's processes of this test (its `env` set by the test), stopped at
    its end, before the database is emptied."""
    started = Portal(tmp_path, {})
    yield started
    started.stop()
