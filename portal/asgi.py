"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Sockets use the session cookie (AuthMiddlewareStack) and are checked against
the allowed hosts; each consumer checks the user's role before subscribing.
"""

import gc
import os

from django.core.asgi import get_asgi_application

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

# Everything imported so far lives as long as the process: leave it out of
# the collector's full passes, which otherwise walk it all while a thousand
# dashboards wait for their message. And collect the young generation every
# 50,000 allocations rather than 700: a broadcast to a thousand sockets
# allocates tens of thousands of short-lived objects, and with the default
# some survived into the older generations often enough that a full pass
# (25-140 ms) fell on one or two broadcasts in ten; cyclic garbage waits a
# little longer, a few MB at most (docs/PERFORMANCE.md, "Fan-out").
gc.freeze()
gc.set_threshold(50_000, 10, 10)
