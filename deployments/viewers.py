"""Who watches a deployment: the channel group of its page's viewers, and the
status event that tells them to read it again. Imports no model, so the
models can tell viewers about their own changes (deployments/logs.py carries
the log lines over the same group)."""

from __future__ import annotations

import logging
import time

from environments.live import publish

log = logging.getLogger(__name__)


def group_name(deployment_id: int) -> str:
    return f"deployment-{deployment_id}"


def broadcast_status(deployment_id: int, status: str) -> None:
    """Tell viewers the deployment changed (they then re-sync from the
    database). Never raises: with Redis down the change stands, and a viewer
    that reconnects reads it from the database."""
    try:
        publish(group_name(deployment_id), {"type": "deployment.status",
                                            "deployment": deployment_id, "status": status,
                                            "at": time.time()})  # fmt: skip
    except Exception:  # noqa: BLE001 - see above
        log.warning("status of deployment %s not broadcast", deployment_id, exc_info=True)
