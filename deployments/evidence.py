"""The evidence pack of a deployment: everything an auditor needs to see what
was shipped, who allowed it under which rules, what happened, and proof that
the record was not edited afterwards.

The pack is plain JSON data (strings, numbers, lists); the HTML page renders
the same dict. Two things in it can be checked without trusting the portal:

- the log: `log.sha256` is SHA-256 over the stored log lines serialised as
  LOG_CANONICAL_FORMAT describes; anyone can recompute it from `log.lines`;
- the audit events: each carries every field its HMAC covers (portal.core.audit's
  canonical()), so a holder of the audit key can re-sign them, and
  `manage.py verify_audit` walks the whole chain.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from deployments.models import CostEstimate, Deployment, LogLine
from deployments.timeline import deployment_events
from environments.choices import StepKind
from environments.models import AlarmTransition
from portal.core import audit
from portal.core.audit import CHAIN_FIELDS, GENESIS_HASH, canonical, sign
from portal.core.models import AuditEvent, ChainVerification

FORMAT = "gantry-evidence/1"
LOG_CANONICAL_FORMAT = (
    "One line per stored log line in seq order, each the compact JSON array "
    "[seq, at, stream, text] (at in UTC as YYYY-MM-DDTHH:MM:SS.ffffff+00:00; "
    'separators "," and ":"; non-ASCII kept as UTF-8) followed by "\\n"; '
    "SHA-256 over the UTF-8 bytes, in lowercase hex."
)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="microseconds") if moment else None


def identity(user) -> dict[str, str] | None:
    """Who someone is, as an auditor needs it: login, full name, email."""
    if user is None:
        return None
    return {"username": user.get_username(), "full_name": user.get_full_name(), "email": user.email}


def log_line_bytes(seq: int, at: datetime, stream: str, text: str) -> bytes:
    """One log line in the canonical serialisation (LOG_CANONICAL_FORMAT)."""
    line = json.dumps([seq, iso(at), stream, text], separators=(",", ":"), ensure_ascii=False)
    return (line + "\n").encode()


def _log_section(deployment: Deployment) -> dict[str, Any]:
    rows = (
        LogLine.objects.filter(deployment=deployment)
        .order_by("seq")
        .values_list("seq", "at", "stream", "text", "step__name")
    )
    digest, lines = hashlib.sha256(), []
    for seq, at, stream, text, step in rows.iterator(chunk_size=5_000):
        digest.update(log_line_bytes(seq, at, stream, text))
        lines.append(
            {"seq": seq, "at": iso(at), "stream": stream, "step": step or "", "text": text}
        )
    return {
        "canonical_format": LOG_CANONICAL_FORMAT,
        "sha256": digest.hexdigest(),
        "line_count": len(lines),
        "lines": lines,
    }


def _release_section(deployment: Deployment) -> dict[str, Any]:
    release = deployment.release
    return {
        "application": release.application.slug,
        "version": release.version,
        "commit": release.commit,
        "notes": release.notes,
        "registered_at": iso(release.created_at),
        "registered_by": identity(release.created_by),
        "artifacts": [
            {
                "service": a.service.slug,
                "image": a.image_ref,
                "repository": a.repository,
                "digest": a.digest,
            }
            for a in release.artifacts.all()
        ],  # fmt: skip
        # What the registries said when the deployment was requested.
        "image_checks": deployment.image_checks,
    }


def _plan_section(deployment: Deployment, step_runs: list) -> dict[str, Any]:
    plans = [run for run in step_runs if run.phase == "plan"]
    return {
        "plan_sha256": deployment.plan_sha256,
        "approval_digest": deployment.approval_digest(),
        "steps": [
            {
                "order": run.order,
                "name": run.name,
                "status": run.status,
                "plan_sha256": run.outputs.get("plan_sha256", ""),
                "summary": run.outputs.get("summary", {}),
                "resource_changes": run.outputs.get("resource_changes", []),
            }
            for run in plans
        ],
    }


def _cost_section(deployment: Deployment) -> dict[str, Any]:
    estimate = CostEstimate.objects.filter(deployment=deployment).first()
    if estimate is None:
        return {"estimated": False}
    return {
        "estimated": True,
        "region": estimate.region,
        "monthly_total_usd": str(estimate.monthly_total_usd),
        "previous_monthly_usd": str(estimate.previous_monthly_usd),
        "delta_monthly_usd": str(estimate.delta_usd),
        "resources": estimate.resources,
        "not_priced": estimate.not_priced,
        "catalog_version": estimate.catalog_version,
        "recorded": estimate.recorded,
        "estimated_at": iso(estimate.created_at),
    }


def _approvals_section(deployment: Deployment) -> list[dict[str, Any]]:
    digest = deployment.approval_digest()
    return [
        {
            "approver": identity(approval.user),
            "decision": approval.decision,
            "comment": approval.comment,
            "at": iso(approval.created_at),
            "digest": approval.digest,
            "bound_to_what_shipped": approval.counts_for(digest),
            "authentication": approval.authentication_summary(),
            "rules_checked": approval.rules,
        }
        for approval in deployment.approvals.select_related("user").order_by("created_at")
    ]


RULE_DESCRIPTIONS = {
    "requester_may_not_approve": "The requester may not approve.",
    "approver_role": "Approvers hold the approver role in the environment.",
    "approver_group": "Approvers belong to the group {}.",
    "registrant_may_not_approve": "Whoever registered the release may not approve.",
    "commit_author_may_not_approve": "The author of the release's commit may not approve.",
    "fresh_mfa_within_minutes": "Approvers confirmed their identity with MFA at most {} "
    "minutes before approving.",
}


def describe_rule(rule: str) -> str:
    name, _, value = rule.partition(":")
    return RULE_DESCRIPTIONS.get(name, rule).format(value)


def _policy_section(deployment: Deployment, events: list[dict]) -> dict[str, Any]:
    requested = next((e for e in events if e["action"] == "deployment.requested"), None)
    applied: list[str] = []
    for rules in deployment.approvals.values_list("rules", flat=True):
        applied += [rule for rule in rules or [] if rule not in applied]
    release = deployment.release
    return {
        "required_approvals": deployment.required_approvals,
        "at_request": ((requested or {}).get("after") or {}).get("policy"),
        "current": deployment.environment.policy_snapshot(),
        "requester_may_approve": False,
        # The rules each decision was checked against when it was made, all together.
        "rules_applied": [{"rule": rule, "description": describe_rule(rule)} for rule in applied],
        "implementers": {
            "registered_by": release.created_by.get_username(),
            "commit_author": release.commit_author,
            "commit_author_user": (
                release.commit_author_user.get_username() if release.commit_author_user_id else None
            ),
        },
    }


def _policy_check_section(deployment: Deployment) -> dict[str, Any] | None:
    check = deployment.policy()
    if check is None:
        return None
    section = check.as_dict()
    if check.overridden:
        section["override"]["by"] = identity(check.overridden_by)
    return section


def summarise_outputs(outputs: dict) -> dict[str, Any]:
    """A step's outputs with long lists and nested objects reduced to a count."""
    summary: dict[str, Any] = {}
    for key, value in sorted((outputs or {}).items()):
        if isinstance(value, list | dict):
            summary[key] = f"{len(value)} item(s)"
        else:
            summary[key] = value
    return summary


def _steps_section(step_runs: list) -> list[dict[str, Any]]:
    return [
        {
            "phase": run.phase,
            "order": run.order,
            "name": run.name,
            "kind": run.kind,
            "status": run.status,
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "duration_seconds": (
                (run.finished_at - run.started_at).total_seconds()
                if run.started_at and run.finished_at
                else None
            ),
            "error": run.error,
            "outputs": summarise_outputs(run.outputs),
        }
        for run in step_runs
    ]


def _alarms_section(deployment: Deployment, step_runs: list) -> dict[str, Any]:
    bakes = [
        r for r in step_runs if r.kind == StepKind.BAKE and r.phase == "deploy" and r.started_at
    ]
    if not bakes:
        return {"baked": False, "from": None, "until": None, "transitions": []}
    start = min(r.started_at for r in bakes)
    end = max((r.finished_at or timezone.now()) for r in bakes)
    transitions = (
        AlarmTransition.objects.filter(
            environment=deployment.environment_id, at__range=(start, end)
        )
        .select_related("alarm")
        .order_by("at", "id")
    )
    return {
        "baked": True,
        "from": iso(start),
        "until": iso(end),
        "transitions": [
            {
                "alarm": t.alarm.name,
                "source": t.alarm.source,
                "from_state": t.from_state,
                "to_state": t.to_state,
                "reason": t.reason,
                "at": iso(t.at),
            }
            for t in transitions
        ],  # fmt: skip
    }


def check_events(rows: list[tuple]) -> list[dict[str, Any]]:
    """Check each event's own signature and its link to the event before it.

    The events of one deployment are scattered through the chain, so this is
    not verify_chain()'s walk: each is re-signed with canonical() and its
    prev_hash compared with the stored hash of event seq - 1 (one query for all).
    """
    wanted = [row[0] - 1 for row in rows if row[0] > 1]
    predecessors = dict(AuditEvent.objects.filter(seq__in=wanted).values_list("seq", "hash"))
    predecessors[0] = GENESIS_HASH
    results = []
    for row in rows:
        seq, prev_hash, stored_hash = row[0], row[14], row[15]
        signed = sign(canonical(*row[:15])) == stored_hash
        linked = predecessors.get(seq - 1) == prev_hash
        problem = ""
        if not signed:
            problem = f"event #{seq} does not match its signature (edited or re-signed)"
        elif not linked:
            problem = f"event #{seq} does not link to the hash of event #{seq - 1}"
        results.append({"seq": seq, "signature_ok": signed, "link_ok": linked, "problem": problem})
    return results


def _chain_verification(last_seq: int | None) -> dict[str, Any] | None:
    latest = ChainVerification.objects.filter(finished_at__isnull=False).first()
    if latest is None:
        return None
    # A broken chain still vouches for the events before the break.
    covers = last_seq is not None and (latest.verified_through_seq or 0) >= last_seq
    return {
        "ok": latest.ok,
        "finished_at": iso(latest.finished_at),
        "events_checked": latest.events_checked,
        "verified_through_seq": latest.verified_through_seq,
        "verified_through_at": iso(latest.verified_through_at),
        "broken_seq": latest.broken_seq,
        "reason": latest.reason,
        "covers_these_events": covers,
    }


def _audit_section(deployment: Deployment) -> dict[str, Any]:
    rows = list(deployment_events(deployment).values_list(*CHAIN_FIELDS))
    checks = check_events(rows)
    events = []
    for row, check in zip(rows, checks, strict=True):
        event = dict(zip(CHAIN_FIELDS, row, strict=True))
        event["at"] = iso(event["at"])
        event.update(signature_ok=check["signature_ok"], link_ok=check["link_ok"])
        events.append(event)
    problems = [c["problem"] for c in checks if c["problem"]]
    return {
        "events": events,
        "verification": {
            "these_events_ok": not problems,
            "problems": problems,
            "checked_at": iso(timezone.now()),
            "chain": _chain_verification(rows[-1][0] if rows else None),
        },
    }


def _override(override) -> dict[str, Any] | None:
    if override is None:
        return None
    return {
        "id": override.pk, "reason": override.reason, "status": override.status,
        "requested_by": identity(override.requested_by),
        "decided_by": identity(override.decided_by),
        "requested_at": iso(override.created_at), "decided_at": iso(override.decided_at),
        "expires_at": iso(override.expires_at),
    }  # fmt: skip


def _promotion(deployment: Deployment) -> dict[str, Any] | None:
    source = deployment.promoted_from
    if source is None:
        return None
    return {
        "id": source.pk, "environment": source.environment.slug,
        "release": source.release.version, "finished_at": iso(source.finished_at),
        "url": settings.PORTAL_URL.rstrip("/") + f"/deployments/{source.pk}/",
    }  # fmt: skip


def _deployment_section(deployment: Deployment) -> dict[str, Any]:
    env = deployment.environment
    return {
        "id": deployment.pk,
        "kind": deployment.kind,
        "status": deployment.status,
        "reason": deployment.reason,
        "error": deployment.error,
        "application": env.application.slug,
        "environment": {"id": env.pk, "slug": env.slug, "name": env.name, "tier": env.tier},
        "requested_by": identity(deployment.requested_by),
        "rollback_of": deployment.rollback_of_id,
        "created_at": iso(deployment.created_at),
        "queued_at": iso(deployment.queued_at),
        "started_at": iso(deployment.started_at),
        "finished_at": iso(deployment.finished_at),
        # The break-glass that let it through a freeze, and the run that satisfied
        # the promotion rule.
        "freeze_override": _override(deployment.freeze_override),
        "promoted_from": _promotion(deployment),
        "window": {
            "not_before": iso(deployment.not_before),
            "not_after": iso(deployment.not_after),
        },
        # Break-glass or a policy override let it through: reviewed after it ran.
        "emergency": (
            {
                "review_due_by": iso(deployment.review_due_by),
                "reviewed_by": identity(deployment.reviewed_by),
                "reviewed_at": iso(deployment.reviewed_at),
                "comment": deployment.review_comment,
            }
            if deployment.emergency
            else None
        ),
        "url": settings.PORTAL_URL.rstrip("/") + f"/deployments/{deployment.pk}/",
    }


def export_pack(deployment: Deployment, actor, export_format: str) -> dict[str, Any]:
    """Build the pack for `actor` and record the export in the audit trail."""
    pack = build_pack(deployment)
    audit.record(
        "evidence.exported",
        deployment,
        actor=actor,
        after={"format": export_format, "log_sha256": pack["log"]["sha256"]},
    )
    return pack


def build_pack(deployment: Deployment) -> dict[str, Any]:
    """The whole evidence pack of one deployment, as JSON-ready data."""
    step_runs = list(deployment.step_runs.order_by("phase", "order"))
    audit_section = _audit_section(deployment)
    return {
        "format": FORMAT,
        "generated_at": iso(timezone.now()),
        "deployment": _deployment_section(deployment),
        "release": _release_section(deployment),
        "plan": _plan_section(deployment, step_runs),
        "cost": _cost_section(deployment),
        "approvals": _approvals_section(deployment),
        "policy": _policy_section(deployment, audit_section["events"]),
        # The Rego policies' verdict on the plan and who overrode it, if anyone.
        "policy_check": _policy_check_section(deployment),
        "steps": _steps_section([r for r in step_runs if r.phase == "deploy"]),
        "alarms_during_bake": _alarms_section(deployment, step_runs),
        "log": _log_section(deployment),
        "audit": audit_section,
    }
