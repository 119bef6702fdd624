"""ASGI entry point: HTTP through Django, WebSockets through Channels.

HTTP goes through portal.http_handler, Django's handler with each request
run in one hand-off to its thread.

Sockets use the session cookie, read once at the handshake
(portal/core/socket_session.py), and are checked against the allowed hosts;
each consumer checks the user's role before subscribing.
"""

import os

import django

from portal.core import collector

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

from portal.http_handler import SyncASGIHandler  # noqa: E402

django_asgi_app = SyncASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal.core.socket_session import SocketAuthMiddlewareStack  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            SocketAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

# What is imported so far lives as long as the process: out of the
# collector's full passes (portal/core/collector.py).
collector.tune()
