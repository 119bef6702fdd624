"""Who is on a socket: the session of the handshake's cookie, read and never
saved (portal/core/socket_session.py), with the socket's sends left as the
server's own. Real sessions (Django's database store), real Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from environments import live
from environments.live import environment_changed
from portal.core.socket_session import SocketAuthMiddlewareStack
from portal.routing import websocket_urlpatterns
from tests.conftest import env
from tests.live import FLUSH_SECONDS
from tests.portal.test_dashboard_consumer import settle
from tests.sockets import Communicator

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def dashboard(cookie: str | None) -> Communicator:
    live.flush(FLUSH_SECONDS)
    headers = [] if cookie is None else [(b"cookie", f"sessionid={cookie}".encode())]
    return Communicator(
        SocketAuthMiddlewareStack(URLRouter(websocket_urlpatterns)), "/ws/dashboard/", headers
    )


def test_the_cookie_of_a_session_signs_the_socket_in_and_the_session_is_not_written(users, catalog):
    production = env(catalog, "production")
    cookie = signed_in(users["dave"])
    before = Session.objects.get(session_key=cookie)

    async def scenario():
        socket = dashboard(cookie)
        assert (await socket.connect())[0]
        await settle()
        await database_sync_to_async(environment_changed)(production.pk, "alarms")
        assert (await socket.receive_json_from())["environment"] == production.pk
        await socket.disconnect()

    asyncio.run(scenario())
    after = Session.objects.get(session_key=cookie)
    assert (after.session_data, after.expire_date) == (before.session_data, before.expire_date)


@pytest.mark.parametrize("cookie", ["none", "forged", "expired", "signed out"])
def test_a_socket_without_a_live_session_is_closed_with_4403(users, catalog, cookie):
    if cookie == "none":
        value = None
    elif cookie == "forged":
        value = "x" * 32
    else:
        value = signed_in(users["dave"])
        if cookie == "expired":
            Session.objects.filter(session_key=value).update(
                expire_date=timezone.now() - timedelta(seconds=1)
            )
        else:
            Session.objects.filter(session_key=value).delete()

    async def scenario():
        socket = dashboard(value)
        await socket.connect()
        assert await socket.receive_output() == {"type": "websocket.close", "code": 4403}

    asyncio.run(scenario())


def test_the_socket_sends_through_the_servers_own_send(users):
    """Nothing between a consumer and the server looks at each message: a
    change written to a thousand dashboards pays for the write alone."""
    seen = {}

    async def inner(scope, receive, send):
        seen["send"], seen["user"] = send, await database_sync_to_async(str)(scope["user"])

    async def server_send(message):  # pragma: no cover - never called
        raise AssertionError(message)

    cookie = signed_in(users["dave"])
    scope = {"type": "websocket", "path": "/ws/dashboard/",
             "headers": [(b"cookie", f"sessionid={cookie}".encode())]}  # fmt: skip
    asyncio.run(SocketAuthMiddlewareStack(inner)(scope, None, server_send))
    assert seen == {"send": server_send, "user": "dave"}
