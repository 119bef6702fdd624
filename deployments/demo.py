"""The demo as data: its two systems (fraud-detector on ECS, fintech-ai-platform
on Kubernetes), their environments and runbooks (the seeds' numbers), and the
releases of the recorded history. `manage.py seed_demo` turns it into rows."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from environments.choices import StepKind, Tier

# Printed by `make run` too. Demo only: never reuse it for a real installation.


ECR = "123456789012.dkr.ecr.ca-central-1.amazonaws.com"
TORONTO = "America/Toronto"
FRAUD_SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
# Health checks go to `${var.api_base_url}/…`: the service's real address, or,
# when `make run` started the sandbox, its STUB API standing in for it.
SANDBOX_API_ENV = "SANDBOX_API_URL"
HEALTH_URLS = ["${var.api_base_url}/health", "${var.api_base_url}/health/ready"]
# Seed 002's smoke test: one scored transaction after the health checks pass.
SMOKE_TRANSACTION = {
    "amount": 250.0, "merchant_category": "online_retail", "merchant_country": "USA",
    "hour_of_day": 14, "day_of_week": 3, "is_online": True, "is_weekend": False,
    "transactions_last_24h": 2, "total_amount_last_24h": 500.0, "transactions_last_1h": 0,
    "distance_from_home": 5.0,
}  # fmt: skip
# Staging's bake in the demo: short enough that a person watching sees it end.
DEMO_BAKE_SECONDS = 30
# The dashboard's alarms: the CloudWatch alarms the sandbox creates per
# environment (…-5xx, -latency, -4xx), and seed 003's Prometheus rules through
# the Alertmanager `make run` starts on this address
# (deployments/sandbox_alertmanager.py); without one they show `unknown`.
FRAUD_ALARMS = {"cloudwatch": {"alarm_prefix": "fraud-detector-${environment}-"}}
PLATFORM_ALARMS = {"alertmanager": {"url": "http://127.0.0.1:9093", "matchers": [
    "namespace=${var.namespace}", "severity=~critical|warning"]}}  # fmt: skip


# The history runs over the eight weeks before this one (Toronto time, where
# the teams work): day 0 is the Monday eight weeks ago.
HISTORY_WEEKS = 8
# Seed 002's production configuration as `terraform show -json` gives it (its
# provenance: docs/COSTS.md). Priced and attached, labelled "recorded", to the
# production deployment of fraud-detector that runs now: the demo ran no plan of it.
RECORDED_PLAN = Path(settings.BASE_DIR) / "infra" / "plans" / "seed002-production.json"
# How long the recorded runs took, by tier (a bake makes staging and production longer).
RUN_MINUTES = {Tier.DEVELOPMENT: 7, Tier.STAGING: 16, Tier.PRODUCTION: 24}
APPROVAL_MINUTES = 25  # between a request and each approval
QUEUE_MINUTES = 2  # between the last approval and the worker starting
SEED_WORKER = "seed_demo (recorded history: nothing was run)"
APPROVAL_COMMENT = "Checked the diff and the runbook."
BOTH = ("bob", "carol")  # production's two approvals
ECS_UNSTABLE = "ECS rolling update: fraud-worker did not become stable within 900 s."


def api_base_url(application: str, environment: str, real_url: str) -> str:
    """Where this environment's API answers: the sandbox stub when there is one."""
    sandbox = os.environ.get(SANDBOX_API_ENV, "").rstrip("/")
    return f"{sandbox}/{application}/{environment}" if sandbox else real_url


@dataclass(frozen=True)
class EnvironmentSpec:
    slug: str
    name: str
    order: int
    tier: str
    required_approvals: int
    budget: int
    health_urls: list[str]
    require_previous_success: bool = False
    rollback_required_approvals: int = 0
    kube_context: str = ""
    variables: dict = field(default_factory=dict)
    steps: list[tuple[str, str, dict]] = field(default_factory=list)  # (name, kind, config)
    weekly_freeze: bool = False
    alarm_sources: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout:
    """One deployment of a release in the history: when (day of the history,
    Toronto time), who approves, and how it ends."""

    environment: str
    reason: str
    day: int
    at: str = "10:00"
    approvers: tuple[str, ...] = ()
    error: str = ""  # the run failed with this error
    rollback: bool = False  # a rollback of what runs there to the release before
    left_open: bool = False  # requested now, awaiting its approvals
    recorded_cost: bool = False  # gets the estimate of RECORDED_PLAN


@dataclass(frozen=True)
class ReleaseSpec:
    version: str
    notes: str
    day: int  # registered at 09:00 on this day of the history
    rollouts: tuple[Rollout, ...]


@dataclass(frozen=True)
class ApplicationSpec:
    slug: str
    name: str
    description: str
    registry: str
    services: tuple[str, ...]
    environments: tuple[EnvironmentSpec, ...]
    history: tuple[ReleaseSpec, ...]


def image_ref(registry: str, service: str, version: str) -> str:
    """A digest-pinned image whose digest is stable across runs (sha256 of name and version)."""
    digest = hashlib.sha256(f"{service}:{version}".encode()).hexdigest()
    return f"{registry}/{service}@sha256:{digest}"


def commit_of(application: str, version: str) -> str:
    return hashlib.sha1(f"{application}@{version}".encode()).hexdigest()[:12]


def ecs_steps(env: str, bake_seconds: float = 0) -> list:
    """The runbook of seeds 001/002 for one environment, as Gantry steps
    (resource names as in seed 001: cluster, RDS instance and alarms per environment).
    Without a bake, there is no snapshot either (dev)."""
    prefix = f"fraud-detector-{env}"
    terraform = {
        "path": "infra/terraform/fraud-detector",
        # State outside the checkout; one workspace per environment in it.
        # Next to the deployments' work directories (var/ in the checkout).
        "backend_config": {"workspace_dir": str(Path(settings.DEPLOY_WORKDIR).parent / "tfstate")},
        "variables": {
            "environment": "${environment}",
            "release_version": "${release.version}",
            "images": {service: f"${{artifact.{service}}}" for service in FRAUD_SERVICES},
        },
    }
    ecs = {
        "cluster": prefix, "services": list(FRAUD_SERVICES), "timeout_seconds": 900,
        "poll_seconds": 5,
    }  # fmt: skip
    http = {"urls": HEALTH_URLS, "timeout_seconds": 120, "interval_seconds": 5}
    if not bake_seconds:
        return [
            ("Terraform apply", StepKind.TERRAFORM, terraform),
            ("ECS rolling update", StepKind.ECS_ROLLING, ecs),
            ("Health check", StepKind.HTTP_CHECK, http),
        ]
    return [
        ("Terraform apply", StepKind.TERRAFORM, terraform),
        ("RDS snapshot", StepKind.RDS_SNAPSHOT, {"db_instance": f"{prefix}-db"}),
        ("ECS rolling update", StepKind.ECS_ROLLING, ecs),
        ("Health check", StepKind.HTTP_CHECK, {**http, "smoke": {
            "url": "${var.api_base_url}/predict", "method": "POST", "json": SMOKE_TRANSACTION,
            "expect_status": 200, "expect_keys": ["fraud_probability"],
        }}),
        # Watch the environment's CloudWatch alarms before calling it done.
        ("Bake", StepKind.BAKE,
         {"duration_seconds": bake_seconds, "poll_seconds": 5,
          "cloudwatch": {"alarm_prefix": f"{prefix}-"}}),
    ]  # fmt: skip


def k8s_steps(namespace: str) -> list:
    """The runbook of seed 003: rolling update of each Deployment, then health."""
    rolling = {
        "namespace": namespace,
        "deployments": ["api-gateway", "ml-service", "frontend"],
        "timeout_seconds": 600,
    }
    return [
        ("Kubernetes rolling update", StepKind.K8S_ROLLING, rolling),
        (
            "Health check",
            StepKind.HTTP_CHECK,
            {"urls": HEALTH_URLS, "timeout_seconds": 120, "interval_seconds": 5},
        ),
    ]


def fraud_detector() -> ApplicationSpec:
    def api(env: str, real_url: str) -> dict:
        return {"api_base_url": api_base_url("fraud-detector", env, real_url)}

    environments = (
        EnvironmentSpec(
            slug="dev", name="Development", order=1, tier=Tier.DEVELOPMENT,
            required_approvals=0, budget=50, health_urls=HEALTH_URLS,
            variables=api("dev", "http://fraud-api.dev.fraud-detector.internal"),
            steps=ecs_steps("dev"), alarm_sources=FRAUD_ALARMS,
        ),
        EnvironmentSpec(
            slug="staging", name="Staging", order=2, tier=Tier.STAGING,
            required_approvals=1, budget=90, health_urls=HEALTH_URLS,
            variables=api("staging", "https://staging-api.fraud-detector.com"),
            steps=ecs_steps("staging", bake_seconds=DEMO_BAKE_SECONDS),
            alarm_sources=FRAUD_ALARMS,
        ),
        EnvironmentSpec(
            slug="production", name="Production", order=3, tier=Tier.PRODUCTION,
            required_approvals=2, budget=185, health_urls=HEALTH_URLS,
            variables=api("production", "https://api.fraud-detector.com"),
            require_previous_success=True, rollback_required_approvals=1,
            steps=ecs_steps("production", bake_seconds=60),
            weekly_freeze=True, alarm_sources=FRAUD_ALARMS,
        ),
    )  # fmt: skip
    return ApplicationSpec(
        slug="fraud-detector",
        name="Fraud Detector",
        description="Real-time fraud scoring: API, ML model service and async worker on "
        "ECS Fargate in ca-central-1.",
        registry=ECR,
        services=FRAUD_SERVICES,
        environments=environments,
        history=fraud_detector_history(),
    )


def fraud_detector_history() -> tuple[ReleaseSpec, ...]:
    """Eight weeks of fraud-detector (day 0 is a Monday): a release a week
    through dev → staging → production, with what real weeks bring: a
    production failure restored by a hotfix the next day, a staging failure
    retried, a rollback, a dev deployment that failed and was run again.
    1.4.0 waits for production."""
    return (
        ReleaseSpec("1.3.0", "Model v7 (precision +2.1 pts); async scoring for batch jobs.", 0, (
            Rollout("dev", "Model v7 candidate", 0, "09:30"),
            Rollout("staging", "Model v7 validation with replayed traffic", 1, "11:00", ("bob",)),
            Rollout("production", "Model v7 rollout, CAB-2291", 3, "14:00", BOTH),
        )),
        ReleaseSpec("1.3.1", "Batch scoring retries throttled Bedrock calls.", 7, (
            Rollout("dev", "Bedrock retries", 7, "09:30"),
            Rollout("staging", "Bedrock retries under load", 8, "10:30", ("carol",)),
            Rollout("production", "Bedrock retries, CAB-2304", 9, "15:00", BOTH,
                    error="Health check: /health/ready answered 503 for 120 s "
                          "(fraud-ml could not load model v7.1)."),
        )),
        ReleaseSpec("1.3.2", "Hotfix: fraud-ml loads the model from its volume again.", 10, (
            Rollout("dev", "Hotfix for the failed 1.3.1 rollout", 10, "09:15"),
            Rollout("staging", "Hotfix smoke test", 10, "10:30", ("bob",)),
            Rollout("production", "Hotfix: restore scoring after 1.3.1, INC-4371", 10, "14:00",
                    BOTH),
        )),
        ReleaseSpec("1.3.3", "Merchant category features from the feature store.", 14, (
            Rollout("dev", "Merchant category features", 14, "09:30"),
            Rollout("staging", "Merchant features with replayed traffic", 15, "10:00",
                    ("carol",), error="Smoke test: POST /predict answered 500 "
                                      "(feature store lookup timed out)."),
            Rollout("staging", "Merchant features, feature store timeout raised", 15, "15:00",
                    ("carol",)),
            Rollout("production", "Merchant category features, CAB-2318", 16, "14:00", BOTH),
            Rollout("production", "False positives doubled for online retail (INC-4398)", 17,
                    "09:30", ("bob",), rollback=True),
        )),
        ReleaseSpec("1.3.4", "Merchant features behind a flag; online retail thresholds fixed.",
                    21, (
            Rollout("dev", "Merchant features behind a flag", 21, "10:00"),
            Rollout("staging", "Flagged merchant features", 22, "11:00", ("bob",)),
            Rollout("production", "Merchant features again, flag off, CAB-2330", 23, "14:00",
                    BOTH),
        )),
        ReleaseSpec("1.3.5", "Model v7.2: recalibrated thresholds for card-not-present.", 28, (
            Rollout("dev", "Model v7.2 candidate", 28, "10:00"),
            Rollout("staging", "Model v7.2 validation", 29, "11:00", ("carol",)),
            Rollout("production", "Model v7.2 rollout, CAB-2342", 30, "14:00", BOTH),
        )),
        ReleaseSpec("1.3.6", "fraud-worker drains its queue before shutdown.", 35, (
            Rollout("dev", "Graceful worker shutdown", 35, "10:00", error=ECS_UNSTABLE),
            Rollout("dev", "Graceful worker shutdown, stop timeout raised", 35, "13:30"),
            Rollout("staging", "Graceful worker shutdown", 36, "11:00", ("bob",)),
            Rollout("production", "Graceful worker shutdown, CAB-2351", 37, "14:00", BOTH,
                    recorded_cost=True),
        )),
        ReleaseSpec("1.4.0", "Bedrock timeout raised to 5 s; fraud-worker retries on 429.", 42, (
            Rollout("dev", "Timeout fix for INC-4412", 42, "10:00"),
            Rollout("staging", "Timeout fix soak test", 43, "11:00", ("carol",)),
            Rollout("production", "Fix for INC-4412 (scoring timeouts at peak)", 0,
                    approvers=("carol",), left_open=True),
        )),
        ReleaseSpec("1.5.0", "Feature store client upgrade.", 49, (
            Rollout("dev", "Feature store client upgrade", 50, "10:00"),
        )),
    )  # fmt: skip


def fintech_ai_platform() -> ApplicationSpec:
    def env(slug: str, name: str, order: int, tier: str, approvals: int, budget: int,
            namespace: str, **rules) -> EnvironmentSpec:  # fmt: skip
        real_url = f"https://{namespace}.fintech-ai-platform.com"
        return EnvironmentSpec(
            slug=slug,
            name=name,
            order=order,
            tier=tier,
            required_approvals=approvals,
            budget=budget,
            health_urls=HEALTH_URLS,
            kube_context=namespace,
            variables={
                "namespace": namespace,
                "api_base_url": api_base_url("fintech-ai-platform", slug, real_url),
            },
            steps=k8s_steps(namespace),
            alarm_sources=PLATFORM_ALARMS,
            **rules,
        )

    environments = (
        env("dev", "Development", 1, Tier.DEVELOPMENT, 0, 60, "fintech-ai-dev"),
        env("staging", "Staging", 2, Tier.STAGING, 1, 140, "fintech-ai-staging"),
        env("production", "Production", 3, Tier.PRODUCTION, 2, 420, "fintech-ai-prod",
            require_previous_success=True, rollback_required_approvals=1, weekly_freeze=True),
    )  # fmt: skip
    return ApplicationSpec(
        slug="fintech-ai-platform",
        name="FinTech AI Platform",
        description="API gateway, ML service and web frontend on Kubernetes, "
        "one namespace per environment.",
        registry=f"{ECR}/fintech-ai",
        services=("api-gateway", "frontend", "ml-service"),
        environments=environments,
        history=(
            ReleaseSpec(
                "2.0.0",
                "Platform baseline: API gateway, ML service and frontend.",
                1,
                (
                    Rollout("dev", "Platform baseline", 1, "09:30"),
                    Rollout("staging", "Platform baseline acceptance", 2, "10:00", ("bob",)),
                    Rollout("production", "Platform go-live, CAB-2295", 4, "11:00", BOTH),
                ),
            ),
            ReleaseSpec(
                "2.0.1",
                "ml-service: readiness waits for the model to load.",
                21,
                (
                    Rollout("dev", "Readiness probe fix", 21, "09:30"),
                    Rollout(
                        "staging",
                        "Readiness probe fix",
                        22,
                        "14:00",
                        ("carol",),
                        error="Rollout of ml-service in fintech-ai-staging exceeded its "
                        "progress deadline (600 s).",
                    ),
                    Rollout(
                        "staging",
                        "Readiness probe fix, memory limit raised",
                        23,
                        "10:00",
                        ("carol",),
                    ),
                    Rollout("production", "Readiness probe fix, CAB-2333", 24, "11:00", BOTH),
                ),
            ),
            ReleaseSpec(
                "2.1.0",
                "Risk scoring v2 behind the API gateway.",
                35,
                (
                    Rollout("dev", "Risk scoring v2", 35, "09:30"),
                    Rollout("staging", "Risk scoring v2 acceptance", 37, "10:00", ("bob",)),
                ),
            ),
            ReleaseSpec(
                "2.2.0",
                "Frontend: case review screen.",
                49,
                (Rollout("dev", "Case review screen", 51, "10:00"),),
            ),
        ),  # fmt: skip
    )
