"""Who may do what (roles, API tokens), how local accounts prove who they are
(TOTP, recovery codes), and the tamper-evident audit trail."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import models
from django.db.models import F
from django.db.models.functions import Upper
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin
from django_otp.oath import TOTP

from portal.core.choices import Role
from portal.core.crypto import EncryptedTextField


class Membership(models.Model):
    """A user's role in one environment. Every permission check starts here."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    environment = models.ForeignKey(
        "environments.Environment", on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    # The IdP group whose mapping grants this row; empty for a role granted by
    # hand. Syncing a user's groups (portal/group_roles.py) only touches rows
    # that name a group, so a hand-made grant never disappears with a group.
    via_group = models.CharField(max_length=255, blank=True, default="", editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "environment", "role"], name="membership_unique_role"
            )
        ]
        indexes = [models.Index(fields=["environment", "role"])]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} in {self.environment}"


class GroupRoleMapping(models.Model):
    """An IdP group's role in every environment, in one application's
    environments, or in one environment (neither, `application` or
    `environment` set). Members of the group hold the role through memberships
    marked with the group, granted and withdrawn at sign-in and at each re-check."""

    group = models.CharField(max_length=255)
    role = models.CharField(max_length=16, choices=Role.choices)
    application = models.ForeignKey(
        "environments.Application",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="group_role_mappings",
    )
    environment = models.ForeignKey(
        "environments.Environment",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="group_role_mappings",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["group", "role", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(application__isnull=True) | models.Q(environment__isnull=True),
                name="grouprolemapping_one_scope",
                violation_error_message="Map a group on one application or one environment, "
                "not both.",
            ),
            # NULLs are distinct in a unique index: one partial index per scope.
            models.UniqueConstraint(
                fields=["group", "role"],
                condition=models.Q(application__isnull=True, environment__isnull=True),
                name="grouprolemapping_unique_all",
            ),
            models.UniqueConstraint(
                fields=["group", "role", "application"],
                condition=models.Q(environment__isnull=True),
                name="grouprolemapping_unique_application",
            ),
            models.UniqueConstraint(
                fields=["group", "role", "environment"], name="grouprolemapping_unique_environment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group} → {self.role} on {self.scope_label}"

    @property
    def scope_label(self) -> str:
        if self.environment_id:
            return f"environment {self.environment}"
        if self.application_id:
            return f"application {self.application.slug}"
        return "all environments"

    def covers(self, environment_id: int, application_id: int) -> bool:
        """True if the mapping's scope takes in this environment."""
        if self.environment_id:
            return self.environment_id == environment_id
        if self.application_id:
            return self.application_id == application_id
        return True

    def describe(self) -> dict[str, str]:
        return {"group": self.group, "role": self.role, "scope": self.scope_label}


class SsoIdentity(models.Model):
    """A user's account at the OpenID provider: who they are there (issuer and
    subject), their groups at the last check, and the tokens the portal
    re-checks them with, encrypted at rest. `withdrawn_at` is set when the
    provider stops vouching for them; their API tokens are refused until they
    sign in through the provider again."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    access_token = EncryptedTextField(blank=True, default="", editable=False)
    access_token_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_token = EncryptedTextField(blank=True, default="", editable=False)
    signed_in_at = models.DateTimeField(default=timezone.now)
    checked_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="ssoidentity_unique_subject")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.subject} at {self.issuer})"

    def keep_tokens(self, token: dict) -> None:
        """Take the tokens of a token-endpoint answer (not saved here). A
        refresh answer without a refresh token keeps the one we have."""
        self.access_token = token.get("access_token", "") or ""
        expires_at = token.get("expires_at")
        self.access_token_expires_at = (
            datetime.fromtimestamp(int(expires_at), tz=UTC) if expires_at else None
        )
        if token.get("refresh_token"):
            self.refresh_token = token["refresh_token"]


class ApiToken(models.Model):
    """A per-user API token. Only its SHA-256 is stored; the key is shown once.
    Issued and revoked through portal/core/tokens.py, which audits both."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the key, so a user can tell tokens apart.
    hint = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(models.Model):
    """One entry of the append-only audit trail.

    `hash` is HMAC-SHA256(AUDIT_KEY, canonical content + prev_hash). The key is
    not in the database, so editing, deleting or re-chaining rows without it is
    caught by `manage.py verify_audit`. The database itself refuses UPDATE and
    DELETE on this table (triggers in the migration).

    Actor, application and environment are kept as plain values next to loose
    references: the trail must outlive the users and objects it speaks of.
    """

    seq = models.BigIntegerField(unique=True, editable=False)
    at = models.DateTimeField(editable=False, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    application = models.ForeignKey(
        "environments.Application",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    environment = models.ForeignKey(
        "environments.Environment",
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    before = models.JSONField(null=True)
    after = models.JSONField(null=True)
    ip = models.GenericIPAddressField(null=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            # The audit page's actor filter is case-insensitive (UPPER(actor_name) = UPPER(…)),
            # its action filter takes prefixes ("deployment." → LIKE 'deployment.%').
            models.Index(Upper("actor_name"), F("seq").desc(), name="auditevent_actor_ci"),
            models.Index(
                fields=["action"],
                opclasses=["varchar_pattern_ops"],
                name="auditevent_action_prefix",
            ),
            models.Index(fields=["environment", "-seq"]),
            models.Index(fields=["application", "-seq"]),
            # One object's events in chain order: a deployment's timeline and evidence.
            models.Index(fields=["target_type", "target_id", "seq"], name="auditevent_target"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_repr}"


class ChainVerification(models.Model):
    """One scheduled walk of the audit chain and its verdict, shown on the
    audit page ("verified through event N at T")."""

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    events_checked = models.PositiveBigIntegerField(default=0)
    verified_through_seq = models.PositiveBigIntegerField(null=True, blank=True)
    verified_through_at = models.DateTimeField(null=True, blank=True)
    broken_seq = models.PositiveBigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        verdict = "ok" if self.ok else f"broken at {self.broken_seq}"
        return f"chain check {self.started_at:%Y-%m-%d %H:%M}: {verdict}"


class TotpDevice(ThrottlingMixin, Device):
    """A local account's authenticator app: RFC 6238 TOTP through django-otp
    (its Device and failure throttling, its TOTP arithmetic), with the shared
    secret stored encrypted (django-otp's own TOTPDevice keeps it in clear).
    One per user; unconfirmed until the user types a first code."""

    key = EncryptedTextField(help_text="Hex-encoded secret, 20 random bytes; stored encrypted.")
    step = 30
    digits = 6
    # One time step either side: phones whose clock is a little off still work.
    tolerance = 1
    last_t = models.BigIntegerField(default=-1, help_text="Time step of the last code accepted.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(Device.Meta):
        verbose_name = "TOTP device"
        constraints = [models.UniqueConstraint(fields=["user"], name="totp_one_per_user")]

    def get_throttle_factor(self) -> int:
        return 1  # 1, 2, 4, 8 … seconds of lock after each failure in a row

    def bin_key(self) -> bytes:
        return bytes.fromhex(self.key)

    def verify_token(self, token) -> bool:
        """Accept a code once (never the same time step twice); failures
        throttle the device. Callers hold the row lock (portal.core.totp)."""
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        token = str(token).strip().replace(" ", "")
        if not (token.isdigit() and len(token) == self.digits):
            self.throttle_increment(commit=True)
            return False
        totp = TOTP(self.bin_key(), self.step, 0, self.digits, 0)
        totp.time = time.time()
        if totp.verify(int(token), self.tolerance, self.last_t + 1):
            self.last_t = totp.t()
            self.throttle_reset(commit=False)
            self.save(update_fields=["last_t", "throttling_failure_timestamp",
                                     "throttling_failure_count"])  # fmt: skip
            return True
        self.throttle_increment(commit=True)
        return False


class RecoveryCode(models.Model):
    """A single-use code that stands in for the authenticator (a lost phone).
    Only its SHA-256 is kept: the codes are random, like API keys."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="recovery_codes"
    )
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "used_at"])]

    def __str__(self) -> str:
        return f"recovery code of {self.user}"


class AuditChainKey(models.Model):
    """Which key signs the audit chain, as a fingerprint: HMAC-SHA256 of a
    fixed label under the key (portal.core.audit.key_fingerprint), never the
    key. One row, written with the first event signed by a process that found
    none. The audit writer compares it before a process's first append and
    refuses another key: one event signed with the wrong key breaks the
    append-only chain for good."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    fingerprint = models.CharField(max_length=64)
    # The first event signed after the fingerprint was recorded (earlier ones
    # were checked through the last of them when it was recorded).
    first_seq = models.BigIntegerField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_key_one_row"),
        ]

    def __str__(self) -> str:
        return f"audit chain key {self.fingerprint[:12]}…"
