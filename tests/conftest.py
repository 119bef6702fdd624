"""Shared fixtures: the fraud-detector catalog of seeds 001/002 and named users.

Users (as in the demo): alice deploys; bob and carol approve; dave only views;
erin administers; mallory has no role anywhere (the outsider).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection

from deployments.models import Release
from environments.choices import Tier
from environments.models import Application, Environment, Service
from portal.core.choices import Role
from portal.core.models import Membership

DIGEST = "sha256:" + "a" * 64
ECR = "123456789012.dkr.ecr.ca-central-1.amazonaws.com"


def image(service: str, digest_char: str = "a") -> str:
    return f"{ECR}/{service}@sha256:{digest_char * 64}"


@pytest.fixture(scope="session", autouse=True)
def _redis_per_xdist_worker() -> None:
    """xdist workers share one Redis server: give each its own database, so
    one worker's RQ jobs (which name rows of its own test database) are never
    run by another worker's workers. Subprocesses inherit it via REDIS_URL.
    (Read from the environment, so the suite also runs with `-p no:xdist`.)"""
    worker_id = os.environ.get("PYTEST_XDIST_WORKER", "master")
    if worker_id == "master":
        return
    from asgiref.local import Local
    from channels.layers import channel_layers
    from django.conf import settings
    from django.core.cache import caches

    url = urlsplit(settings.REDIS_URL)._replace(path=f"/{10 + int(worker_id[2:])}").geturl()
    os.environ["REDIS_URL"] = settings.REDIS_URL = url
    for queue in settings.RQ_QUEUES.values():
        queue["URL"] = url
    settings.CACHES["default"]["LOCATION"] = url
    for layer in settings.CHANNEL_LAYERS.values():
        layer["CONFIG"]["hosts"] = [{"address": url, "socket_timeout": None}]
    # Pub/sub channels ignore the database number: the broadcast layer's prefix keeps
    # this worker's broadcasts its own (as portal/settings.py does per REDIS_URL).
    broadcast = settings.CHANNEL_LAYERS["broadcast"]["CONFIG"]
    prefix = broadcast["prefix"].rpartition("-db-")[0]
    broadcast["prefix"] = f"{prefix}-db-{url.rpartition('/')[2]}"
    # Forget any cache connection made before this fixture ran (it would still
    # point at the shared database).
    caches.__dict__.pop("settings", None)
    caches._connections = Local(caches.thread_critical)
    channel_layers.backends.clear()


@pytest.fixture(scope="session", autouse=True)
def _no_cards_of_earlier_runs(_redis_per_xdist_worker) -> None:
    """Every run starts a new test database, whose environment ids start at 1
    again: dashboard cards kept by an earlier run must not be served as this
    run's (their card versions would still be found)."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    for pattern in (f"{prefix}:*:card-version:*", f"{prefix}:*:card:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


@pytest.fixture(autouse=True)
def _card_updates_done():
    """Dashboard cards are built in a background thread after commits: let a
    test's updates finish inside the test, not in the next one (or while its
    database is being dropped)."""
    yield
    from environments import live
    from tests.live import FLUSH_SECONDS

    live.flush(FLUSH_SECONDS)


@pytest.fixture(autouse=True)
def _test_settings(settings) -> None:
    # PBKDF2 costs ~0.3 s a user and nothing but the sign-in tests care; and
    # tests run without collectstatic, so templates use the plain storage.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Every prepared query also compiled by Django and compared (make test sets
    # it for the servers the tests start too).
    settings.PREPARED_QUERIES_CHECK = True
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _postgres_only(request):
    if "django_db_setup" in request.fixturenames or "db" in request.fixturenames:
        assert connection.vendor == "postgresql", "the suite runs on PostgreSQL (DATABASE_URL)"


@pytest.fixture
def users(db) -> dict[str, User]:
    made = {}
    for name in ("alice", "bob", "carol", "dave", "erin", "mallory"):
        made[name] = User.objects.create_user(name, f"{name}@example.com", "correct-horse-battery")
    return made


@pytest.fixture
def catalog(users) -> Application:
    """fraud-detector with its three services and dev → staging → production."""
    app = Application.objects.create(slug="fraud-detector", name="Fraud Detector")
    for slug in ("fraud-api", "fraud-ml", "fraud-worker"):
        Service.objects.create(application=app, slug=slug, name=slug)
    Group.objects.create(name="risk")
    envs = [
        Environment.objects.create(application=app, slug="dev", name="Development", order=1,
                                   tier=Tier.DEVELOPMENT, required_approvals=0),
        Environment.objects.create(application=app, slug="staging", name="Staging", order=2,
                                   tier=Tier.STAGING, required_approvals=1),
        Environment.objects.create(application=app, slug="production", name="Production",
                                   order=3, tier=Tier.PRODUCTION, required_approvals=2,
                                   require_previous_success=True, rollback_required_approvals=1),
    ]  # fmt: skip
    for env in envs:
        grant(users["alice"], env, Role.DEPLOYER)
        grant(users["dave"], env, Role.VIEWER)
        grant(users["erin"], env, Role.ADMIN)
        grant(users["bob"], env, Role.APPROVER)
        grant(users["carol"], env, Role.APPROVER)
    return app


def grant(user: User, env: Environment, role: str) -> Membership:
    return Membership.objects.create(user=user, environment=env, role=role)


def env(app: Application, slug: str) -> Environment:
    return app.environments.get(slug=slug)


@pytest.fixture
def release(catalog, users) -> Release:
    return Release.register(
        catalog,
        "1.4.0",
        {s: image(s) for s in ("fraud-api", "fraud-ml", "fraud-worker")},
        users["alice"],
        notes="Bedrock timeout raised to 5 s",
        commit="3f9c2ab",
    )


@pytest.fixture
def queues():
    """The RQ queues, empty before and after the test."""
    import django_rq

    names = ("high", "default", "low")
    for name in names:
        django_rq.get_queue(name).empty()
    yield [django_rq.get_queue(name) for name in names]
    for name in names:
        django_rq.get_queue(name).empty()


def work(queues) -> None:
    """Run every queued job (and the jobs they enqueue) in this process."""
    from rq import SimpleWorker

    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)


@pytest.fixture(autouse=True)
def _no_sign_in_failures_of_other_tests():
    """Sign-in failure counters live in Redis (shared by every web replica, and
    by every test): each test starts and ends without any."""
    import redis
    from django.conf import settings

    def clear() -> None:
        client = redis.Redis.from_url(settings.REDIS_URL)
        prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
        for key in client.scan_iter(match=f"{prefix}:*:axes-*", count=1000):
            client.delete(key)

    clear()
    yield
    clear()


@pytest.fixture(scope="session", autouse=True)
def _no_sessions_left_on_the_test_database(django_db_setup, django_db_blocker):
    """At the end of a run, threads of this process that ran database code
    for a test (asgiref's and channels' executors among them) can still hold
    a connection taken from the pool. The pool's close() leaves a connection
    that is out open, and PostgreSQL will not drop a database with a session
    on it: pytest-django's teardown then failed with "1 other session"
    (found by mapping the sessions' client ports to processes: they were
    all this worker's). Those sessions are ended before the drop."""
    yield
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()
