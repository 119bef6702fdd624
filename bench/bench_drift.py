"""One runtime drift sweep of 100 environments (goal ≤ 10 s), AWS calls counted.

Each environment runs fraud-detector's three services on ECS (an
`ecs_rolling` step) with a succeeded deployment of its release; ten of them
have one service changed behind Gantry's back. AWS is a moto server in a
process of its own (as AWS is remote, its work does not share this process's
CPU). Times `drift.check_runtime` for every environment in turn (what the
scheduler's sweep does before it queues the Terraform checks), reports the
median of the runs, the AWS calls per sweep counted at botocore, the CPU time
and the load average. Runs on its own database, gantry_bench_drift.

python -m bench.bench_drift [--environments N] [--runs N]   # prints JSON
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

DB_NAME = "gantry_bench_drift"
GOAL_S = 10.0
SERVICES = ("fraud-api", "fraud-ml", "fraud-worker")
ECR = "123456789012.dkr.ecr.ca-central-1.amazonaws.com"
REGION = "ca-central-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto_server did not start")


def setup(environments: int, endpoint: str) -> list[int]:
    import boto3
    from django.contrib.auth.models import User

    from deployments.choices import Status
    from deployments.models import Deployment, Release
    from environments.models import Application, Environment, Service, Step

    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name=REGION)
    user = User.objects.create_user("bench")
    app = Application.objects.create(slug="fraud-detector", name="Fraud Detector")
    for slug in SERVICES:
        Service.objects.create(application=app, slug=slug, name=slug)
    images = {s: f"{ECR}/{s}@sha256:{'a' * 64}" for s in SERVICES}
    release = Release.objects.create(application=app, version="1.4.0", created_by=user)
    for service in app.services.all():
        release.artifacts.create(service=service, image_ref=images[service.slug])
    ids = []
    for number in range(environments):
        slug = f"env{number:03d}"
        cluster = f"fraud-detector-{slug}"
        environment = Environment.objects.create(application=app, slug=slug, name=slug,
                                                 order=number, region=REGION)  # fmt: skip
        Step.objects.create(environment=environment, order=1, name="ECS rolling update",
                            kind="ecs_rolling", config={"cluster": cluster,
                                                        "services": list(SERVICES)})  # fmt: skip
        Deployment.objects.create(release=release, environment=environment, requested_by=user,
                                  reason="bench", status=Status.SUCCEEDED)  # fmt: skip
        ecs.create_cluster(clusterName=cluster)
        for service in SERVICES:
            drifted = number % 10 == 0 and service == "fraud-ml"
            image = f"docker.io/someone/{service}:hotfix" if drifted else images[service]
            arn = ecs.register_task_definition(
                family=f"{cluster}-{service}",
                containerDefinitions=[{"name": service, "image": image, "memory": 512}],
            )["taskDefinition"]["taskDefinitionArn"]
            ecs.create_service(cluster=cluster, serviceName=service, taskDefinition=arn,
                               desiredCount=1)  # fmt: skip
        ids.append(environment.pk)
    return ids


class CallCounter:
    """Counts the AWS API calls botocore makes (every client, every session)."""

    def __init__(self) -> None:
        from botocore.client import BaseClient

        self.calls = 0
        original = BaseClient._make_api_call

        def counted(client, operation, params):
            self.calls += 1
            return original(client, operation, params)

        BaseClient._make_api_call = counted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environments", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="accepted for run_all; own data")
    args = parser.parse_args(argv)

    common.configure_environment()
    url = urlunsplit(urlsplit(common.bench_database_url())._replace(path=f"/{DB_NAME}"))
    os.environ["DATABASE_URL"] = url
    common.recreate_database(url, DB_NAME)
    moto, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from deployments import drift
        from deployments.models import EnvironmentDrift

        ids = setup(args.environments, endpoint)
        counter = CallCounter()
        walls, cpus, calls = [], [], []
        for _ in range(args.runs):
            counter.calls = 0
            wall, cpu = time.perf_counter(), time.process_time()
            clients: dict = {}  # as sweep_drift() shares them
            for environment_id in ids:
                drift.check_runtime(environment_id, clients)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            calls.append(counter.calls)
        states = list(EnvironmentDrift.objects.values_list("state", flat=True))
        median = statistics.median(walls)
        result = {
            "benchmark": "drift_sweep",
            "environments": len(ids),
            "services_per_environment": len(SERVICES),
            "runs": args.runs,
            "wall_s_median": round(median, 3),
            "wall_s_each": [round(w, 3) for w in walls],
            "cpu_s_median": round(statistics.median(cpus), 3),
            "aws_calls_per_sweep": calls[-1],
            "aws_calls_per_environment": round(calls[-1] / len(ids), 2),
            "drifted": states.count("drifted"),
            "in_sync": states.count("in_sync"),
            "unknown": states.count("unknown"),
            "goal_s": GOAL_S,
            "goal_met": median <= GOAL_S,
            "load_average": os.getloadavg(),
        }
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    from bench.bench_logs import machine

    print(json.dumps({"drift": result, "machine": machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
