"""Helpers for the two-factor tests: the codes an authenticator app would show."""

from __future__ import annotations

import time

from django_otp.oath import TOTP

from portal.core.models import TotpDevice


def code_of(device: TotpDevice, steps_ahead: int = 0) -> str:
    """The code an authenticator app holding this device's secret shows now
    (or `steps_ahead` 30-second steps later: a code not used yet)."""
    totp = TOTP(bytes.fromhex(device.key), device.step, 0, device.digits, 0)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():06d}"


def fresh_code(user) -> str:
    """A code the server has not accepted yet (each time step is accepted once)."""
    device = TotpDevice.objects.get(user=user)
    current = int(time.time()) // device.step
    return code_of(device, steps_ahead=max(0, device.last_t + 1 - current))
