"""One listener per ASGI process for the live logs of every deployment
viewed in it.

A log viewer used to be a channel-layer consumer of its own: each batch of a
burst (500 lines, one frame) was decoded, queued and dispatched once per
viewer, in the viewer's task, before its frame was written. Here the
process has one channel, in the group of every deployment some local viewer
watches (portal/core/socket_hub.py); a batch is decoded once, and the frame
the writer encoded (deployments/logs.py) is written straight to every
viewer that is in step with it.

The order a viewer gets its lines in stays the consumer's
(deployments/consumers.py): the hub writes a batch itself only to a viewer
that has every line before it and nothing of its own under way. Anything
else (a gap to fill from the database, lines it already has some of, a
status that sends it back to the database, a socket whose buffer is full)
goes to that viewer's own queue, which it works through in order.
"""

from __future__ import annotations

from deployments.logs import LOG_CHANNEL_LAYER
from deployments.viewers import group_name
from portal.core.socket_hub import SocketHub, step_send


class LogHub(SocketHub):
    alias = LOG_CHANNEL_LAYER
    group_of = staticmethod(group_name)
    channel_prefix = "logs."

    async def deliver(self, message: dict) -> None:
        viewers = self.watchers.get(message.get("deployment"))
        if not viewers:
            return
        if message.get("type") != "log.lines":  # a status: each viewer re-reads the database
            for viewer in viewers:
                viewer.queue(message)
            return
        frame = {"type": "websocket.send", "text": message["frame"]}
        for viewer in viewers:
            if viewer.busy:  # a catch-up or earlier messages under way: this goes after them
                viewer.queue(message)
            elif message["last"] <= viewer.last_seq:
                continue  # it has these lines already
            elif message["first"] != viewer.last_seq + 1:
                viewer.queue(message)  # a gap or an overlap: the consumer's own way
            else:
                written = step_send(viewer, frame)
                if written:
                    viewer.last_seq = message["last"]
                elif written is False:  # its buffer is full: sent awaited, in order
                    viewer.queue(message)
                # None: the socket is closing; its disconnect forgets it


def log_hub() -> LogHub:
    return LogHub.of_this_loop()
