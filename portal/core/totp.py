"""TOTP for local accounts: enrol (a QR code drawn here, no outside service),
verify a code or a recovery code, issue recovery codes, reset. Every change
and every failed code is audited.

Concurrency: a code is checked under the device's row lock, so one code
cannot be accepted twice by two requests at once, and a recovery code is
spent by a conditional UPDATE (the row count says who won).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import quote, urlencode

import segno
from django.db import transaction
from django.utils import timezone

from portal.core import audit
from portal.core.models import RecoveryCode, TotpDevice

ISSUER = "Gantry"
RECOVERY_CODES = 10


def device_of(user, *, confirmed: bool | None = True) -> TotpDevice | None:
    devices = TotpDevice.objects.filter(user=user)
    if confirmed is not None:
        devices = devices.filter(confirmed=confirmed)
    return devices.first()


def has_totp(user) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed=True).exists()


def start_enrolment(user) -> TotpDevice:
    """The user's unconfirmed device with a new secret (an earlier unfinished
    enrolment is replaced); refused while a confirmed one exists."""
    with transaction.atomic():
        existing = TotpDevice.objects.select_for_update().filter(user=user).first()
        if existing is not None and existing.confirmed:
            raise ValueError("This account already has an authenticator; reset it first.")
        if existing is not None:
            existing.delete()
        return TotpDevice.objects.create(
            user=user, name="authenticator", confirmed=False, key=secrets.token_hex(20)
        )


def secret_base32(device: TotpDevice) -> str:
    """The secret as authenticator apps take it when typed in by hand."""
    return base64.b32encode(device.bin_key()).decode().rstrip("=")


def provisioning_uri(device: TotpDevice) -> str:
    """The otpauth:// URI of the Key Uri Format that authenticator apps scan."""
    label = quote(f"{ISSUER}:{device.user.get_username()}")
    query = urlencode({"secret": secret_base32(device), "issuer": ISSUER, "algorithm": "SHA1",
                       "digits": device.digits, "period": device.step})  # fmt: skip
    return f"otpauth://totp/{label}?{query}"


def qr_svg(device: TotpDevice) -> str:
    """The provisioning URI as an inline SVG QR code, drawn on the server."""
    return segno.make(provisioning_uri(device), error="m").svg_inline(scale=5, border=2)


def _check(device_pk: int, code: str) -> bool:
    with transaction.atomic():
        device = TotpDevice.objects.select_for_update().get(pk=device_pk)
        return device.verify_token(code)


def confirm_enrolment(user, code: str) -> list[str] | None:
    """Confirm the unconfirmed device with its first code; returns the new
    recovery codes (shown once), or None when the code is wrong."""
    device = device_of(user, confirmed=False)
    if device is None or not _check(device.pk, code):
        if device is not None:
            audit.record("auth.mfa_failed", _target(user), actor=user, after={"when": "enrolment"})
        return None
    with transaction.atomic():
        TotpDevice.objects.filter(pk=device.pk).update(confirmed=True)
        codes = _new_recovery_codes(user)
        audit.record("auth.mfa_enrolled", _target(user), actor=user,
                     after={"method": "totp", "recovery_codes": len(codes)})  # fmt: skip
    return codes


def verify(user, code: str) -> str | None:
    """Check a second factor: a TOTP code, or (when it does not look like one)
    a recovery code, which is then spent. Returns the method ("totp" or
    "recovery_code"), or None (audited as auth.mfa_failed)."""
    device = device_of(user)
    if device is None:
        return None
    code = (code or "").strip()
    compact = code.replace(" ", "")
    if compact.isdigit() and len(compact) == device.digits:
        method = "totp" if _check(device.pk, compact) else None
    else:
        method = "recovery_code" if _spend_recovery_code(user, device, code) else None
    if method is None:
        device.refresh_from_db()
        audit.record("auth.mfa_failed", _target(user), actor=user,
                     after={"failures_in_a_row": device.throttling_failure_count})  # fmt: skip
    else:
        audit.record("auth.mfa_verified", _target(user), actor=user, after={"method": method})
    return method


def seconds_locked(user) -> int:
    """How long the device refuses codes after failures in a row (0: it doesn't)."""
    device = device_of(user)
    if device is None:
        return 0
    allowed, data = device.verify_is_allowed()
    if allowed or not data or not data.get("locked_until"):
        return 0
    return max(1, int((data["locked_until"] - timezone.now()).total_seconds()) + 1)


def _spend_recovery_code(user, device: TotpDevice, code: str) -> bool:
    with transaction.atomic():
        locked = TotpDevice.objects.select_for_update().get(pk=device.pk)
        if not locked.verify_is_allowed()[0]:
            return False
        spent = RecoveryCode.objects.filter(
            user=user, code_hash=_hash(code), used_at__isnull=True
        ).update(used_at=timezone.now())
        if spent:
            locked.throttle_reset(commit=True)
            return True
        locked.throttle_increment(commit=True)
        return False


def issue_recovery_codes(user) -> list[str]:
    """New recovery codes for a user with an authenticator; the old ones stop working."""
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        audit.record("auth.mfa_recovery_codes_issued", _target(user), actor=user,
                     after={"recovery_codes": len(codes)})  # fmt: skip
    return codes


def remaining_recovery_codes(user) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


def reset(user, by) -> bool:
    """Remove the user's authenticator and recovery codes (a lost phone): they
    sign in with their password alone until they enrol again. Audited with who did it."""
    with transaction.atomic():
        devices = TotpDevice.objects.filter(user=user).delete()[0]
        codes = RecoveryCode.objects.filter(user=user).delete()[0]
        if not devices and not codes:
            return False
        audit.record("auth.mfa_reset", _target(user), actor=by,
                     after={"user": user.get_username(), "devices": devices,
                            "recovery_codes": codes})  # fmt: skip
    return True


def _new_recovery_codes(user) -> list[str]:
    RecoveryCode.objects.filter(user=user).delete()
    # 10 characters of base32: 50 random bits each, shown as xxxxx-xxxxx.
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
        codes.append(f"{raw[:5]}-{raw[5:]}")
    RecoveryCode.objects.bulk_create(RecoveryCode(user=user, code_hash=_hash(c)) for c in codes)
    return codes


def _hash(code: str) -> str:
    normal = "".join(code.lower().split()).replace("-", "")
    return hashlib.sha256(normal.encode()).hexdigest()


def _target(user) -> tuple[str, int, str]:
    return ("auth.user", user.pk, user.get_username())
