"""A deployment's live log as a viewer sees it: a WebSocket client of the
web process (the `websockets` library), signed in with a session cookie,
collecting the lines and statuses it is sent in a thread of its own."""

from __future__ import annotations

import json
import threading

from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.faults.processes import Portal
from tests.polling import wait_for


def session_cookie(user) -> str:
    """A signed-in session of `user`, stored in the database the web process reads."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class LogViewer:
    """Follows /ws/deployments/<id>/logs/?after=N until the socket closes or
    `close()`; `lines` is [(seq, text)] in the order received."""

    def __init__(self, portal: Portal, deployment_id: int, cookie: str, after: int = 0) -> None:
        self.lines: list[tuple[int, str]] = []
        self.statuses: list[str] = []
        self.closed = threading.Event()
        self._connection = connect(
            f"ws://127.0.0.1:{portal.web_port}/ws/deployments/{deployment_id}/logs/?after={after}",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
            open_timeout=30,
        )
        self.socket = self._connection.__enter__()  # left in close()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self.socket:
                message = json.loads(frame)
                if message["type"] == "runs":
                    for run in message["runs"]:
                        self.lines.extend(
                            (run["seq"] + offset, text) for offset, text in enumerate(run["texts"])
                        )
                elif message["type"] == "status":
                    self.statuses.append(message["status"])
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    @property
    def last_seq(self) -> int:
        return self.lines[-1][0] if self.lines else 0

    def wait_status(self, status: str, timeout: float) -> bool:
        return bool(wait_for(lambda: status in self.statuses, timeout))

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self._thread.join(10)
