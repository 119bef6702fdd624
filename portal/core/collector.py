"""The garbage collector of a process that serves requests for hours.

Everything a server imports at start (Django, the URL conf, the templates'
compiled nodes, the apps' modules) lives as long as the process. Left to the
default settings, the collector's full passes walk all of it again and
again: 25-140 ms each here, falling on whichever request or broadcast was
running (docs/PERFORMANCE.md, "Fan-out"). `tune()` moves what exists so far
out of its reach and collects the young generation every 50,000 allocations
rather than 700: a page or a broadcast allocates tens of thousands of
short-lived objects, and with the default some survived into the older
generations often enough to set off a full pass every few requests. Cyclic
garbage waits a little longer: a few MB at most.

Called once, after the application is loaded, by the servers' entry points
(portal/asgi.py, portal/wsgi.py) and by the page benchmarks, which serve the
pages the way those do.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune() -> None:
    gc.collect()  # what is garbage already is freed, not kept for good
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
