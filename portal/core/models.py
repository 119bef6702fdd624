"""Who may do what (roles, API tokens) and the tamper-evident audit trail."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.core.choices import Role


class Membership(models.Model):
    """A user's role in one environment. Every permission check starts here."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    environment = models.ForeignKey(
        "environments.Environment", on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "environment", "role"], name="membership_unique_role"
            )
        ]
        indexes = [models.Index(fields=["environment", "role"])]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} in {self.environment}"


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
            models.Index(fields=["actor_name", "-seq"]),
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
