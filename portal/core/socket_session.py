"""Who is on a WebSocket: the session of its handshake's cookie, read once.

Channels' SessionMiddleware wraps a socket's send so that it can save the
session and set its cookie on an HTTP response. A WebSocket has no HTTP
response after its handshake, so for a socket that wrapper never saves
anything, yet it looked at the session (`modified`, `is_empty()`, through a
lazy object) before every message: about an eighth of the work of writing
one change to a thousand dashboards (docs/PERFORMANCE.md). Here the socket's
session is read, never saved, and its sends are the server's own. Nothing
on a socket changes the session: signing in and out happen over HTTP.
"""

from __future__ import annotations

from importlib import import_module

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware
from django.conf import settings


class SocketSessionMiddleware:
    """Puts the handshake's session in scope["session"]; needs scope["cookies"]."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope, receive, send):
        # Constructing the store reads nothing: the row is read when the user
        # is resolved (AuthMiddleware, in a thread).
        session = self.session_store(scope["cookies"].get(settings.SESSION_COOKIE_NAME))
        return await self.inner(dict(scope, session=session), receive, send)


def SocketAuthMiddlewareStack(inner):  # noqa: N802 - named as channels' AuthMiddlewareStack
    """channels' AuthMiddlewareStack with a session that is only read."""
    return CookieMiddleware(SocketSessionMiddleware(AuthMiddleware(inner)))
