"""What goes wrong when Gantry talks to infrastructure, in words a person can act on."""

from __future__ import annotations

from typing import Any


class CloudError(Exception):
    """A call to a cloud API or a tool failed; `message` says what was being
    done and why it failed, for the person who reads the step or the page.

    `outputs` carries what had already been changed when it failed (a
    deployment step's partial outputs); `details` carries structured facts
    for the caller (e.g. the holder of a Terraform state lock).
    """

    def __init__(self, message: str, *, outputs: dict | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.outputs = outputs or {}
        self.details = details


class Cancelled(CloudError):
    """The work was cancelled while it ran, and stopped cleanly."""
