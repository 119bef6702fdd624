"""The dashboard socket: refused to the anonymous, told about changes of the
environments the user may see and never about others. Real Redis (the
"broadcast" pub/sub layer), channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from deployments.choices import Status
from deployments.models import Deployment
from environments import live
from environments.live import environment_changed, environment_group
from portal.dashboard_hub import hub
from portal.routing import websocket_urlpatterns
from tests.conftest import env, grant
from tests.live import FLUSH_SECONDS, subscribed
from tests.sockets import Communicator

pytestmark = pytest.mark.django_db(transaction=True)


def connect(user) -> Communicator:
    live.flush(FLUSH_SECONDS)  # the broadcasts of the test's setup are out before the socket opens
    communicator = Communicator(URLRouter(websocket_urlpatterns), "/ws/dashboard/")
    communicator.scope["user"] = user
    return communicator


async def settle() -> None:
    # The hub's group joins are SUBSCRIBEs Redis acts on a little later: wait
    # until it has them all, so a message published next is not sent to nobody.
    await subscribed(*(environment_group(pk) for pk in hub().joined))


def test_it_refuses_the_anonymous(catalog):
    async def scenario():
        communicator = connect(AnonymousUser())
        await communicator.connect()
        # Closed with 4403 before anything was sent.
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4403}

    asyncio.run(scenario())


def test_it_tells_which_visible_environment_changed(users, catalog):
    staging = env(catalog, "staging")

    async def scenario():
        communicator = connect(users["dave"])
        connected, _ = await communicator.connect()
        assert connected
        await settle()
        await database_sync_to_async(environment_changed)(staging.pk, "alarm")
        message = await communicator.receive_json_from()
        assert message == {"type": "changed", "environment": staging.pk, "what": "alarm"}
        await communicator.disconnect()

    asyncio.run(scenario())


def test_it_never_tells_about_an_invisible_environment(users, catalog):
    dev, production = env(catalog, "dev"), env(catalog, "production")
    grant(users["mallory"], dev, "viewer")

    async def scenario():
        communicator = connect(users["mallory"])
        connected, _ = await communicator.connect()
        assert connected
        await settle()
        await database_sync_to_async(environment_changed)(production.pk, "deployment")
        assert await communicator.receive_nothing(timeout=0.8)
        # The socket works: a change of the environment she may see does arrive.
        await database_sync_to_async(environment_changed)(dev.pk, "deployment")
        message = await communicator.receive_json_from()
        assert message["environment"] == dev.pk
        await communicator.disconnect()

    asyncio.run(scenario())


def test_an_outsider_hears_nothing(users, catalog):
    environment_ids = list(catalog.environments.values_list("pk", flat=True))

    async def scenario():
        communicator = connect(users["mallory"])
        connected, _ = await communicator.connect()
        assert connected  # signed in, but no group joined
        await settle()
        for environment_id in environment_ids:
            await database_sync_to_async(environment_changed)(environment_id, "deployment")
        assert await communicator.receive_nothing(timeout=0.8)
        await communicator.disconnect()

    asyncio.run(scenario())


def test_a_deployment_that_starts_updates_the_card_once(users, catalog, release):
    dev = env(catalog, "dev")
    # Test setup only: a deployment waiting for a worker.
    queued = Deployment.objects.create(
        release=release, environment=dev, requested_by=users["alice"], reason="dashboard",
        status=Status.QUEUED, queued_at=timezone.now(),
    )  # fmt: skip

    async def scenario():
        communicator = connect(users["dave"])
        assert (await communicator.connect())[0]
        await settle()
        assert await database_sync_to_async(queued.start)("worker-1")
        message = await communicator.receive_json_from()
        assert message == {"type": "changed", "environment": dev.pk, "what": "deployment"}
        await database_sync_to_async(queued.finish)(Status.SUCCEEDED)
        assert (await communicator.receive_json_from())["environment"] == dev.pk
        # One message per transition: nothing else is pending.
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    asyncio.run(scenario())


def test_changes_in_one_transaction_are_sent_once(users, catalog):
    from django.db import transaction

    dev = env(catalog, "dev")

    def burst() -> None:
        with transaction.atomic():
            for _ in range(5):
                environment_changed(dev.pk, "step")

    async def scenario():
        communicator = connect(users["dave"])
        assert (await communicator.connect())[0]
        await settle()
        await database_sync_to_async(burst)()
        assert (await communicator.receive_json_from())["environment"] == dev.pk
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    asyncio.run(scenario())
