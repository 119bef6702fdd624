"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Sockets use the session cookie (AuthMiddlewareStack) and are checked against
the allowed hosts; each consumer checks the user's role before subscribing.
"""

import os

from django.core.asgi import get_asgi_application

from portal.core import collector

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

# What is imported so far lives as long as the process: out of the
# collector's full passes (portal/core/collector.py).
collector.tune()
