"""The web server as the image runs it declines the per-message compression
browsers ask for on every WebSocket: it would deflate each frame once per
socket (docs/PERFORMANCE.md, "Browsers ask for compression")."""

from __future__ import annotations

import pytest
from websockets.sync.client import connect

from tests.servers import web_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# What Chromium sends in every WebSocket handshake.
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"


@pytest.mark.parametrize("path", ["/ws/dashboard/", "/ws/deployments/1/logs/"])
def test_a_browsers_offer_of_compression_is_declined(tmp_path, path):
    with web_server(tmp_path / "web.log") as url:
        socket_url = url.replace("http://", "ws://") + path
        # compression=None: the offer is the header below, word for word.
        with connect(
            socket_url,
            origin=url,
            compression=None,
            additional_headers={"Sec-WebSocket-Extensions": BROWSER_OFFER},
        ) as socket:
            # Anonymous: accepted, then closed with 4403 (the handshake is what counts here).
            assert socket.response.status_code == 101
            assert "Sec-WebSocket-Extensions" not in socket.response.headers
