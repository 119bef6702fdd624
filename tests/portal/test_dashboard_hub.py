"""The process's dashboard hub: one channel for every open dashboard, each
socket told only of the environments it was given at connect time."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from environments import live
from environments.live import environment_changed
from portal.dashboard_hub import hub
from tests.conftest import env, grant
from tests.live import FLUSH_SECONDS, WAIT_SECONDS
from tests.portal.test_dashboard_consumer import connect, settle

pytestmark = pytest.mark.django_db(transaction=True)


class Socket:
    """A consumer as the hub sees it: something with an ASGI send."""

    def __init__(self, fails: bool = False) -> None:
        self.sent: list[dict] = []
        self.fails = fails

    async def base_send(self, message: dict) -> None:
        if self.fails:
            raise RuntimeError("socket closed")
        self.sent.append(message)


def test_two_dashboards_in_one_process_hear_only_their_environments(users, catalog):
    dev, production = env(catalog, "dev"), env(catalog, "production")
    grant(users["mallory"], dev, "viewer")

    async def scenario():
        dave, mallory = connect(users["dave"]), connect(users["mallory"])
        assert (await dave.connect())[0] and (await mallory.connect())[0]
        await settle()
        await database_sync_to_async(environment_changed)(production.pk, "deployment")
        assert (await dave.receive_json_from())["environment"] == production.pk
        assert await mallory.receive_nothing(timeout=0.5)
        await database_sync_to_async(environment_changed)(dev.pk, "step")
        for socket in (dave, mallory):
            assert await socket.receive_json_from() == {
                "type": "changed", "environment": dev.pk, "what": "step"
            }  # fmt: skip
        await dave.disconnect()
        await mallory.disconnect()
        # Nobody left: the hub keeps no environment and no group.
        assert hub().watchers == {} and hub().joined == set()

    asyncio.run(scenario())


def test_a_failed_write_does_not_stop_the_others(catalog):
    async def scenario():
        sockets = [Socket(), Socket(fails=True), Socket()]
        for socket in sockets:
            hub().watchers.setdefault(7, set()).add(socket)
            hub().watch(socket)
        await hub().tell({"type": "environment.changed", "environment": 7, "what": "alarms"})
        assert [len(s.sent) for s in sockets] == [1, 0, 1]
        assert sockets[0].sent[0] == {
            "type": "websocket.send",
            "text": '{"type": "changed", "environment": 7, "what": "alarms"}',
        }
        await hub().tell({"type": "environment.changed", "environment": 8, "what": "alarms"})
        assert [len(s.sent) for s in sockets] == [1, 0, 1]  # nobody watches 8

    asyncio.run(scenario())


class SlowSocket(Socket):
    """A socket whose buffer is full, as uvicorn's: its send waits until the
    reader has caught up, before writing anything."""

    def __init__(self) -> None:
        super().__init__()
        self.writable = asyncio.Event()

    async def base_send(self, message: dict) -> None:
        await self.writable.wait()
        self.sent.append(message)


def test_a_slow_reader_waits_alone_and_gets_its_message_once(catalog):
    async def scenario():
        slow, fast = SlowSocket(), [Socket(), Socket()]
        for socket in (slow, *fast):
            hub().watchers.setdefault(9, set()).add(socket)
            hub().watch(socket)
        telling = asyncio.create_task(
            hub().tell({"type": "environment.changed", "environment": 9, "what": "step"})
        )
        await asyncio.sleep(0.05)
        # The others were written to while the slow one still waits.
        assert [len(s.sent) for s in fast] == [1, 1] and slow.sent == []
        assert not telling.done()
        slow.writable.set()
        await asyncio.wait_for(telling, 1)
        assert len(slow.sent) == 1
        assert slow.sent == fast[0].sent

    asyncio.run(scenario())


def test_a_dashboard_still_in_its_handshake_keeps_its_groups(catalog):
    """One dashboard leaves while another has joined the same environment
    but not yet accepted its socket: the group stays, and the newcomer hears
    the next change once accepted (and nothing before)."""
    dev = env(catalog, "dev")
    # The catalog's own "edited" broadcasts are still in the update thread:
    # let them go out before anyone joins, or a slow machine delivers one late.
    live.flush(FLUSH_SECONDS)

    async def scenario():
        leaving, arriving = Socket(), Socket()
        await hub().join(leaving, [dev.pk])
        hub().watch(leaving)
        await hub().join(arriving, [dev.pk])  # its handshake is not done yet
        await hub().tell({"type": "environment.changed", "environment": dev.pk, "what": "a"})
        assert (len(leaving.sent), len(arriving.sent)) == (1, 0)
        await hub().forget(leaving)
        assert dev.pk in hub().joined
        hub().watch(arriving)
        await settle()
        await database_sync_to_async(environment_changed)(dev.pk, "step")
        # The card is built and the change published by a background thread.
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while not arriving.sent and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert [json.loads(m["text"])["what"] for m in arriving.sent] == ["step"]
        await hub().forget(arriving)

    asyncio.run(scenario())


def test_broadcasts_fall_back_to_the_layer_without_pubsub(settings):
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        live.LAYER: {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    assert live._publisher() is None
