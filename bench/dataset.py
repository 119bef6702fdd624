"""The benchmark data set: 10 applications x 5 environments, releases,
deployments with approvals, steps and log lines, and an audit trail of up to a
million correctly chained events.

Everything is written in bulk. The audit events go in through COPY, their
HMACs computed here with portal.core.audit.canonical/sign exactly as record() would,
so verify_chain() accepts the result. `grow_to()` only adds what is missing,
so the data can be grown in stages (10 % then 100 %) and measured at each.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

APPLICATIONS = 10
ENVIRONMENT_SLUGS = ("dev", "test", "staging", "preprod", "production")
SERVICES = ("api", "ml", "worker")
USERS = 200
FULL_EVENTS = 1_000_000
FULL_DEPLOYMENTS = 10_000
# Audit events are spaced so that a million of them span about a year up to now.
EVENT_SPACING = timedelta(seconds=30)

AUDIT_COLUMNS = (
    "seq", "at", "actor_id", "actor_name", "action", "target_type", "target_id",
    "target_repr", "application_id", "environment_id", "before", "after", "ip",
    "request_id", "prev_hash", "hash",
)  # fmt: skip


@dataclass
class Catalog:
    root_id: int
    viewer_id: int
    user_ids: list[int]
    usernames: dict[int, str]
    environments: list[tuple[int, int, str]]  # (env id, app id, "app/env")
    releases_by_app: dict[int, list[int]]


def _digest(seed: int) -> str:
    return f"{random.Random(seed).getrandbits(256):064x}"


def ensure_catalog(applications: int = APPLICATIONS) -> Catalog:
    """Users, applications, environments, services and memberships (idempotent);
    `applications` × 5 environments (the dashboard benchmark asks for 20: 100)."""
    from django.contrib.auth.models import User

    from environments.choices import Tier
    from environments.models import Application, Environment, Service
    from portal.core.models import Membership

    if not User.objects.filter(username="root").exists():
        User.objects.create_superuser("root", "root@example.com", None)
        User.objects.bulk_create(
            User(username=f"user{n:03d}", email=f"user{n:03d}@example.com", password="!")
            for n in range(USERS)
        )
        User.objects.create_user("viewer", "viewer@example.com", None)
        tiers = [Tier.DEVELOPMENT, Tier.DEVELOPMENT, Tier.STAGING, Tier.STAGING, Tier.PRODUCTION]
        for a in range(applications):
            app = Application.objects.create(slug=f"app-{a:02d}", name=f"Application {a:02d}")
            Service.objects.bulk_create(
                Service(application=app, slug=f"{app.slug}-{s}", name=s) for s in SERVICES
            )
            Environment.objects.bulk_create(
                Environment(
                    application=app,
                    slug=slug,
                    name=slug.title(),
                    order=n + 1,
                    tier=tiers[n],
                    required_approvals=[0, 0, 1, 1, 2][n],
                    require_previous_success=n == 4,
                )  # fmt: skip
                for n, slug in enumerate(ENVIRONMENT_SLUGS)
            )
        users = list(User.objects.filter(username__startswith="user").order_by("pk"))
        memberships = []
        rng = random.Random(7)
        for env in Environment.objects.all():
            for user in rng.sample(users, 12):
                role = rng.choice(["viewer", "deployer", "approver"])
                memberships.append(Membership(user=user, environment=env, role=role))
        viewer = User.objects.get(username="viewer")
        for env in Environment.objects.filter(application__slug__in=["app-00", "app-01"]):
            memberships.append(Membership(user=viewer, environment=env, role="viewer"))
        Membership.objects.bulk_create(memberships, ignore_conflicts=True)

    users = dict(User.objects.filter(username__startswith="user").values_list("pk", "username"))
    from deployments.models import Release

    releases: dict[int, list[int]] = {}
    for pk, app_id in Release.objects.values_list("pk", "application_id"):
        releases.setdefault(app_id, []).append(pk)
    return Catalog(
        root_id=User.objects.get(username="root").pk,
        viewer_id=User.objects.get(username="viewer").pk,
        user_ids=sorted(users),
        usernames=users,
        environments=[
            (pk, app_id, f"{app}/{slug}")
            for pk, app_id, app, slug in Environment.objects.order_by("pk").values_list(
                "pk", "application_id", "application__slug", "slug"
            )
        ],
        releases_by_app=releases,
    )


def grow_deployments(catalog: Catalog, target: int, log_lines: bool = True) -> int:
    """Add releases (one per ten deployments) and deployments up to `target`,
    with approvals, three step runs and (unless `log_lines` is false) ten log
    lines each. The newest deployment of every tenth environment is running:
    never more than one per environment (the `one_running_per_environment`
    constraint), so the earlier running one of a grown data set is finished first."""
    from deployments.choices import Decision, Kind, Status
    from deployments.models import (
        Approval,
        Artifact,
        Deployment,
        LogLine,
        Release,
        StepRun,
        approval_digest,
    )
    from environments.models import Service

    have = Deployment.objects.count()
    if have >= target:
        return 0
    rng = random.Random(have)
    services = {}
    for pk, app_id, slug in Service.objects.values_list("pk", "application_id", "slug"):
        services.setdefault(app_id, []).append((pk, slug))
    app_ids = sorted({app_id for _, app_id, _ in catalog.environments})
    now = datetime.now(UTC)

    # Releases: one per ten deployments, spread over the applications.
    release_target = max(APPLICATIONS, target // 10)
    release_have = Release.objects.count()
    new_releases = [
        Release(
            application_id=app_ids[n % len(app_ids)],
            version=f"1.{n // 100}.{n % 100}",
            commit=f"{n:07x}",
            notes="Benchmark release",
            created_by_id=catalog.root_id,
            created_at=now - timedelta(hours=(release_target - n)),
        )  # fmt: skip
        for n in range(release_have, release_target)
    ]
    Release.objects.bulk_create(new_releases, batch_size=2000)
    artifacts = []
    for release in new_releases:
        for service_id, slug in services[release.application_id]:
            ref = f"registry.example/{slug}@sha256:{_digest(release.pk * 7 + service_id)}"
            artifacts.append(Artifact(release=release, service_id=service_id, image_ref=ref))
    Artifact.objects.bulk_create(artifacts, batch_size=5000)
    for release in new_releases:
        catalog.releases_by_app.setdefault(release.application_id, []).append(release.pk)
    artifact_maps: dict[int, dict[str, str]] = {}
    for release_id, slug, ref in Artifact.objects.values_list(
        "release_id", "service__slug", "image_ref"
    ):
        artifact_maps.setdefault(release_id, {})[slug] = ref

    statuses = [Status.SUCCEEDED] * 80 + [Status.FAILED] * 8 + [Status.CANCELLED] * 4 + \
        [Status.REJECTED] * 3 + [Status.AWAITING_APPROVAL] * 3 + [Status.QUEUED] * 2  # fmt: skip
    deployments = []
    for n in range(have, target):
        env_id, app_id, _ = catalog.environments[n % len(catalog.environments)]
        created = now - timedelta(minutes=5 * (target - n))
        status = rng.choice(statuses) if n < target - 50 else Status.AWAITING_APPROVAL
        finished = status not in (Status.AWAITING_APPROVAL, Status.QUEUED)
        minute = timedelta(minutes=1)
        deployments.append(Deployment(
            release_id=rng.choice(catalog.releases_by_app[app_id]), environment_id=env_id,
            kind=Kind.DEPLOY, status=status, requested_by_id=rng.choice(catalog.user_ids),
            reason="Benchmark deployment", required_approvals=1,
            plan_sha256=_digest(n), created_at=created,
            queued_at=None if status == Status.AWAITING_APPROVAL else created + minute,
            started_at=created + timedelta(minutes=2) if finished else None,
            finished_at=created + timedelta(minutes=9) if finished else None,
        ))  # fmt: skip
    # At most one running deployment per environment: finish the ones a
    # smaller stage left running, then start the newest of every tenth.
    Deployment.objects.filter(status=Status.RUNNING).update(
        status=Status.SUCCEEDED, finished_at=now - timedelta(minutes=1)
    )
    StepRun.objects.filter(status="running").update(status="succeeded", finished_at=now)
    newest: dict[int, Deployment] = {}
    for deployment in deployments:
        newest[deployment.environment_id] = deployment
    for env_id, deployment in newest.items():
        if env_id % 10 == 0:
            deployment.status, deployment.finished_at = Status.RUNNING, None
            deployment.started_at = deployment.started_at or deployment.created_at
    Deployment.objects.bulk_create(deployments, batch_size=2000)

    approvals, steps = [], []
    for deployment in deployments:
        approver = rng.choice([u for u in catalog.user_ids[:5] if u != deployment.requested_by_id])
        digest = approval_digest(artifact_maps[deployment.release_id], deployment.plan_sha256)
        approvals.append(Approval(deployment=deployment, user_id=approver,
                                  decision=Decision.APPROVE, comment="ok", digest=digest,
                                  created_at=deployment.created_at))  # fmt: skip
        for order, kind in enumerate(("terraform", "ecs_rolling", "http_check"), start=1):
            running = deployment.status == Status.RUNNING and order >= 2
            steps.append(StepRun(
                deployment=deployment, order=order, name=kind, kind=kind,
                status="running" if running else "succeeded", started_at=deployment.started_at,
                finished_at=None if running else deployment.finished_at,
            ))  # fmt: skip
            if running:
                break
    Approval.objects.bulk_create(approvals, batch_size=5000)
    StepRun.objects.bulk_create(steps, batch_size=5000)
    if not log_lines:
        return len(deployments)
    lines = [
        LogLine(
            deployment_id=step.deployment_id,
            seq=(step.order - 1) * 4 + i + 1,
            step=step,
            text=f"[{step.name}] line {i}: rolling out task definition revision {i}",
            at=step.deployment.created_at,
        )  # fmt: skip
        for step in steps
        for i in range(4 if step.order < 3 else 2)
    ]
    LogLine.objects.bulk_create(lines, batch_size=10_000)
    return len(deployments)


_ACTIONS = (
    ("deployment.requested", None, {"status": "awaiting_approval", "reason": "Benchmark"}),
    ("deployment.approved", {"status": "awaiting_approval"}, {"status": "queued"}),
    ("deployment.started", {"status": "queued"}, {"status": "running"}),
    ("deployment.succeeded", {"status": "running"}, {"status": "succeeded"}),
    ("release.registered", None, {"version": "1.0.0", "commit": "3f9c2ab"}),
    ("auth.signed_in", None, None),
)


def _copy_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def grow_audit(catalog: Catalog, target: int, chunk: int = 20_000) -> int:
    """Append chained events up to `target` through COPY; returns how many were added."""
    from django.db import connection

    from portal.core.audit import GENESIS_HASH, canonical, sign
    from portal.core.models import AuditEvent

    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = last if last else (0, GENESIS_HASH)
    if seq >= target:
        return 0
    rng = random.Random(seq)
    epoch = datetime.now(UTC) - EVENT_SPACING * FULL_EVENTS - timedelta(days=1)
    users = [(pk, catalog.usernames[pk]) for pk in catalog.user_ids]
    envs = catalog.environments
    dumps = json.dumps
    sql = f"COPY portal_auditevent ({', '.join(AUDIT_COLUMNS)}) FROM STDIN"
    connection.ensure_connection()
    raw = connection.connection
    added = 0
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        lines: list[str] = []
        while seq < target:
            seq += 1
            at = epoch + EVENT_SPACING * seq + timedelta(microseconds=rng.randrange(1_000_000))
            actor_id, actor_name = users[rng.randrange(len(users))]
            action, before, after = _ACTIONS[rng.randrange(len(_ACTIONS))]
            if action == "auth.signed_in":
                target_type, target_id, target_repr = "auth.user", str(actor_id), actor_name
                app_id = env_id = None
            else:
                env_id, app_id, env_name = envs[rng.randrange(len(envs))]
                number = rng.randrange(1, FULL_DEPLOYMENTS)
                target_type, target_id = "deployments.deployment", str(number)
                target_repr = f"#{number} {env_name} 1.{number // 100}.{number % 100}"
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            request_id = f"{rng.getrandbits(128):032x}"
            content = canonical(seq, at, actor_id, actor_name, action, target_type, target_id,
                                target_repr, app_id, env_id, before, after, ip, request_id,
                                prev_hash)  # fmt: skip
            digest = sign(content)
            lines.append("\t".join((
                str(seq), at.isoformat(), str(actor_id), actor_name, action, target_type,
                target_id, _copy_escape(target_repr),
                "\\N" if app_id is None else str(app_id), "\\N" if env_id is None else str(env_id),
                "\\N" if before is None else _copy_escape(dumps(before)),
                "\\N" if after is None else _copy_escape(dumps(after)),
                ip, request_id, prev_hash, digest,
            )))  # fmt: skip
            prev_hash = digest
            added += 1
            if len(lines) >= chunk:
                copy.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            copy.write("\n".join(lines) + "\n")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return added


def grow_to(fraction: float) -> dict:
    """Grow the data set to `fraction` of the full size; returns counts and timings."""
    import time

    from django.db import connection

    started = time.perf_counter()
    catalog = ensure_catalog()
    deployments = grow_deployments(catalog, round(FULL_DEPLOYMENTS * fraction))
    mid = time.perf_counter()
    events = grow_audit(catalog, round(FULL_EVENTS * fraction))
    done = time.perf_counter()
    with connection.cursor() as cursor:
        # Sets the visibility map, so reads right after a bulk load are not
        # penalised by hint-bit writes the way they would not be in production.
        cursor.execute("VACUUM ANALYZE")
    return {
        "fraction": fraction,
        "deployments_added": deployments,
        "events_added": events,
        "seconds_deployments": round(mid - started, 1),
        "seconds_events": round(done - mid, 1),
        "events_per_s_generated": round(events / (done - mid)) if events else None,
    }
