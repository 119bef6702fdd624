"""A FAKE Kubernetes API server, for the tests and the local demo only.

No kube-apiserver can run on these machines, so this small `http.server`
speaks just enough of the real REST API for the deploy engine's k8s_rolling
runner and the official `kubernetes` client: apps/v1 Deployments (get, list,
create, patch with strategic-merge, JSON-merge and JSON patches) and
ReplicaSets (list with a label selector), plus `/version`.

It imitates the deployment controller closely enough to exercise real rollout
logic: a template change creates (or, for a template seen before, reuses) a
ReplicaSet with the next `deployment.kubernetes.io/revision`, and each read of
the Deployment advances the rollout one step (observedGeneration first, then
new pods, then available pods while old ones scale down). `stall()` makes a
rollout hang until its progressDeadlineSeconds pass, then report
ProgressDeadlineExceeded like the real controller.

Objects carry the fields the client's models require, with the real types, so
they deserialize into V1Deployment / V1ReplicaSet without complaint.

A FAULT SWITCH (`FakeKubeApi.faults`, tests only) makes it misbehave as a sick
API server does: answer every request with an error status (500), or hold
each request without answering (a timeout on the client's side), until it is
switched off.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"
# Strategic merge patch: lists of these keys merge element-wise by the given field.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
}

DEPLOYMENTS_RE = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/?$")
DEPLOYMENT_RE = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)(/status)?$")
REPLICASETS_RE = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/replicasets/?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


# -- patch formats -------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes strategic merge: like a merge patch, except that known lists
    (containers, env, …) merge element by element on their merge key."""
    if isinstance(patch, list) and key in MERGE_KEYS and isinstance(target, list):
        field = MERGE_KEYS[key]
        result = copy.deepcopy(target)
        for item in patch:
            match = next(
                (i for i, old in enumerate(result) if old.get(field) == item.get(field)), None
            )
            if item.get("$patch") == "delete":
                if match is not None:
                    result.pop(match)
            elif match is None:
                result.append(copy.deepcopy(item))
            else:
                result[match] = strategic_merge_patch(result[match], item)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if name.startswith("$"):
            continue
        if value is None:
            result.pop(name, None)
        else:
            result[name] = strategic_merge_patch(result.get(name), value, name)
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: dict, operations: list) -> dict:
    """RFC 6902 JSON patch: add, replace, remove and test."""
    result = copy.deepcopy(target)
    for operation in operations:
        op, parts = operation.get("op"), _pointer(operation.get("path", ""))
        parent = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op in ("add", "replace"):
            value = copy.deepcopy(operation["value"])
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op == "add":
                    parent.insert(index, value)
                else:
                    parent[index] = value
            else:
                if op == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"replace of missing path {operation['path']}")
                parent[last] = value
        elif op == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        elif op == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != operation.get("value"):
                raise ApiError(422, "Invalid", f"test failed at {operation['path']}")
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {op!r}")
    return result


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: `a=b`, `a==b`, `a!=b`, joined by commas."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            name, value = term.split("!=", 1)
            if labels.get(name.strip()) == value.strip():
                return False
        elif "=" in term:
            name, value = term.replace("==", "=").split("=", 1)
            if labels.get(name.strip()) != value.strip():
                return False
        elif term.strip() not in labels:
            return False
    return True


def template_hash(template: dict) -> str:
    template = copy.deepcopy(template)
    template.get("metadata", {}).get("labels", {}).pop(TEMPLATE_HASH, None)
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


# -- the cluster ---------------------------------------------------------------


class FakeCluster:
    """The FAKE API's objects and its imitation of the deployment controller."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.deployments: dict[tuple[str, str], dict] = {}
        self.replica_sets: dict[tuple[str, str], dict] = {}
        self.rollouts: dict[tuple[str, str], dict] = {}
        self.stalled: set[tuple[str, str]] = set()
        self._version = 1

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def add_deployment(
        self,
        namespace: str,
        name: str,
        containers: dict[str, str],
        replicas: int = 2,
        progress_deadline_seconds: int = 600,
    ) -> dict:
        """Create a Deployment already fully rolled out (revision 1)."""
        labels = {"app": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "progressDeadlineSeconds": progress_deadline_seconds,
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "containers": [{"name": c, "image": i} for c, i in containers.items()]
                    },
                },
            },
        }
        with self.lock:
            self.create_deployment(namespace, body)
            while self.rollouts.get((namespace, name)):
                self.tick(namespace, name)
            return copy.deepcopy(self.deployments[(namespace, name)])

    def create_deployment(self, namespace: str, body: dict) -> dict:
        name = body.get("metadata", {}).get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        with self.lock:
            if (namespace, name) in self.deployments:
                raise ApiError(409, "AlreadyExists", f'deployments.apps "{name}" already exists')
            spec = body.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
            )
            metadata = body["metadata"]
            metadata.update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                generation=1,
                resourceVersion=self._next_version(),
                creationTimestamp=_now(),
            )
            metadata.setdefault("annotations", {})
            body["status"] = {"observedGeneration": 0, "replicas": 0}
            self.deployments[(namespace, name)] = body
            self._start_rollout(namespace, name)
            return copy.deepcopy(body)

    def read_deployment(self, namespace: str, name: str, advance: bool = True) -> dict:
        with self.lock:
            if (namespace, name) not in self.deployments:
                raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found')
            if advance:
                self.tick(namespace, name)
            return copy.deepcopy(self.deployments[(namespace, name)])

    def patch_deployment(self, namespace: str, name: str, content_type: str, patch: Any) -> dict:
        with self.lock:
            current = self.read_deployment(namespace, name, advance=False)
            if content_type.startswith("application/strategic-merge-patch+json"):
                updated = strategic_merge_patch(current, patch)
            elif content_type.startswith("application/merge-patch+json"):
                updated = merge_patch(current, patch)
            elif content_type.startswith("application/json-patch+json"):
                if not isinstance(patch, list):
                    raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
                updated = json_patch(current, patch)
            else:
                raise ApiError(
                    415, "UnsupportedMediaType", f"unsupported patch type {content_type}"
                )
            updated["status"] = current["status"]  # the status is the controller's
            for field in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                updated["metadata"][field] = current["metadata"][field]
            if updated["spec"] != current["spec"]:
                updated["metadata"]["generation"] += 1
            updated["metadata"]["resourceVersion"] = self._next_version()
            self.deployments[(namespace, name)] = updated
            if updated["spec"] != current["spec"]:
                self._start_rollout(namespace, name)
            return copy.deepcopy(updated)

    def list_deployments(self, namespace: str) -> list[dict]:
        with self.lock:
            return [
                copy.deepcopy(d)
                for (ns, _), d in sorted(self.deployments.items())
                if ns == namespace
            ]

    def list_replica_sets(self, namespace: str, selector: str = "") -> list[dict]:
        with self.lock:
            return [
                copy.deepcopy(rs)
                for (ns, _), rs in sorted(self.replica_sets.items())
                if ns == namespace and selector_matches(selector, rs["metadata"].get("labels", {}))
            ]

    def stall(self, namespace: str, name: str, stalled: bool = True) -> None:
        """From now on, rollouts of this Deployment never get available pods."""
        with self.lock:
            (self.stalled.add if stalled else self.stalled.discard)((namespace, name))

    # -- the deployment controller, one step per read ------------------------------

    def _owned(self, namespace: str, deployment: dict) -> list[dict]:
        uid = deployment["metadata"]["uid"]
        return [
            rs
            for (ns, _), rs in self.replica_sets.items()
            if ns == namespace and any(o["uid"] == uid for o in rs["metadata"]["ownerReferences"])
        ]

    def _start_rollout(self, namespace: str, name: str) -> None:
        deployment = self.deployments[(namespace, name)]
        template = deployment["spec"]["template"]
        digest = template_hash(template)
        owned = self._owned(namespace, deployment)
        latest = max((int(rs["metadata"]["annotations"][REVISION]) for rs in owned), default=0)
        new = next((rs for rs in owned if rs["metadata"]["labels"][TEMPLATE_HASH] == digest), None)
        if new is None:
            labels = {**template.get("metadata", {}).get("labels", {}), TEMPLATE_HASH: digest}
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {})["labels"] = dict(labels)
            new = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{digest}",
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "labels": dict(labels),
                    "annotations": {},
                    "resourceVersion": self._next_version(),
                    "generation": 1,
                    "creationTimestamp": _now(),
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": deployment["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "replicas": 0,
                    "selector": {
                        "matchLabels": {
                            **deployment["spec"]["selector"].get("matchLabels", {}),
                            TEMPLATE_HASH: digest,
                        }
                    },
                    "template": rs_template,
                },
                "status": {
                    "replicas": 0,
                    "fullyLabeledReplicas": 0,
                    "readyReplicas": 0,
                    "availableReplicas": 0,
                    "observedGeneration": 1,
                },
            }
            self.replica_sets[(namespace, new["metadata"]["name"])] = new
        # A new template, or an old one brought back (`rollout undo`), becomes the
        # newest revision; a change that keeps the template (replicas) keeps it.
        current = new["metadata"]["annotations"].get(REVISION)
        if current is None or int(current) < latest:
            new["metadata"]["annotations"][REVISION] = str(latest + 1)
        new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = str(
            deployment["spec"]["replicas"]
        )
        deployment["metadata"]["annotations"][REVISION] = new["metadata"]["annotations"][REVISION]
        self.rollouts[(namespace, name)] = {
            "new": new["metadata"]["name"],
            "started": time.monotonic(),
            "stalled": (namespace, name) in self.stalled,
        }

    def tick(self, namespace: str, name: str) -> None:
        rollout = self.rollouts.get((namespace, name))
        if rollout is None:
            return
        deployment = self.deployments[(namespace, name)]
        status = deployment["status"]
        generation = deployment["metadata"]["generation"]
        if status.get("observedGeneration", 0) < generation:
            status["observedGeneration"] = generation
            self._condition(
                deployment,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rollout["new"]}" is progressing.',
            )
            self._summarize(namespace, deployment, rollout)
            return
        desired = deployment["spec"]["replicas"]
        new = self.replica_sets[(namespace, rollout["new"])]
        if rollout["stalled"]:
            deadline = deployment["spec"].get("progressDeadlineSeconds", 600)
            if new["spec"]["replicas"] < 1:
                new["spec"]["replicas"] = new["status"]["replicas"] = 1
            if time.monotonic() - rollout["started"] > deadline:
                self._condition(
                    deployment,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rollout["new"]}" has timed out progressing.',
                )
            self._summarize(namespace, deployment, rollout)
            return
        # Pods created on the last step are available now; old pods make room.
        available = min(new["status"]["replicas"], desired)
        for key in ("availableReplicas", "readyReplicas", "fullyLabeledReplicas"):
            new["status"][key] = available
        room = max(desired - available, 0)
        for old in self._owned(namespace, deployment):
            if old is new:
                continue
            keep = min(old["spec"]["replicas"], room)
            room -= keep
            old["spec"]["replicas"] = keep
            old["status"].update(
                replicas=keep, availableReplicas=keep, readyReplicas=keep, fullyLabeledReplicas=keep
            )
        if new["spec"]["replicas"] != desired:
            step = 1 if new["spec"]["replicas"] < desired else -1
            new["spec"]["replicas"] += step
            new["status"]["replicas"] = new["spec"]["replicas"]
        self._summarize(namespace, deployment, rollout)
        if (
            status.get("updatedReplicas")
            == desired
            == status.get("availableReplicas")
            == status["replicas"]
        ):
            self._condition(
                deployment,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
            self._condition(
                deployment,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rollout["new"]}" has successfully progressed.',
            )
            del self.rollouts[(namespace, name)]

    def _summarize(self, namespace: str, deployment: dict, rollout: dict) -> None:
        owned = self._owned(namespace, deployment)
        new = self.replica_sets[(namespace, rollout["new"])]
        status = deployment["status"]
        status["replicas"] = sum(rs["status"]["replicas"] for rs in owned)
        status["updatedReplicas"] = new["status"]["replicas"]
        status["availableReplicas"] = sum(rs["status"].get("availableReplicas", 0) for rs in owned)
        status["readyReplicas"] = status["availableReplicas"]
        status["unavailableReplicas"] = max(
            deployment["spec"]["replicas"] - status["availableReplicas"], 0
        )
        deployment["metadata"]["resourceVersion"] = self._next_version()

    @staticmethod
    def _condition(deployment: dict, kind: str, state: str, reason: str, message: str) -> None:
        conditions = deployment["status"].setdefault("conditions", [])
        now = _now()
        for condition in conditions:
            if condition["type"] == kind:
                if condition["status"] != state:
                    condition["lastTransitionTime"] = now
                condition.update(status=state, reason=reason, message=message, lastUpdateTime=now)
                return
        conditions.append(
            {
                "type": kind,
                "status": state,
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )


# -- HTTP ----------------------------------------------------------------------


VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-fake",
    "gitCommit": "fake",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class FaultSwitch:
    """Makes the FAKE API server fail on purpose: `fail(500)` answers every
    request with that status (a kube-apiserver Status body), `hang()` holds
    every request without an answer until `off()` (or `hang_seconds`);
    `off()` heals it. `hits` counts the requests it spoiled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status: int | None = None
        self.hang_seconds: float | None = None
        self._released = threading.Event()
        self.hits = 0

    def fail(self, status: int = 500) -> None:
        with self._lock:
            self.status, self.hang_seconds = status, None

    def hang(self, seconds: float = 300) -> None:
        with self._lock:
            self.status, self.hang_seconds = None, seconds
            self._released.clear()

    def off(self) -> None:
        with self._lock:
            self.status, self.hang_seconds = None, None
            self._released.set()

    def spoil(self) -> ApiError | None:
        """Called for each request: the error to answer with; None when the
        switch is off. A held request ends with the connection closed and
        no answer (its client has given up by then)."""
        with self._lock:
            status, hang = self.status, self.hang_seconds
            if status is None and hang is None:
                return None
            self.hits += 1
        if hang is not None:
            self._released.wait(hang)
            raise _Dropped
        return ApiError(status, "InternalError", "injected by the fault switch")


class _Dropped(Exception):
    """A request held by the fault switch: closed without an answer."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet, like a good fake
        pass

    def _send(self, code: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> Any:
        try:
            return json.loads(self._raw_body or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not JSON") from None

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        cluster = self.server.cluster
        try:
            self.server.requests.append((method, url.path, self.headers.get("Content-Type")))
            # Read before any answer: an error sent with the body unread would
            # leave it on the kept-alive connection, as the next request.
            self._raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if (fault := self.server.faults.spoil()) is not None:
                raise fault
            if method == "GET" and url.path.rstrip("/") == "/version":
                return self._send(200, VERSION)
            if match := DEPLOYMENT_RE.match(url.path):
                namespace, name = match.group(1), match.group(2)
                if method == "GET":
                    return self._send(200, cluster.read_deployment(namespace, name))
                if method == "PATCH":
                    content_type = self.headers.get("Content-Type", "")
                    return self._send(
                        200, cluster.patch_deployment(namespace, name, content_type, self._body())
                    )
            if match := DEPLOYMENTS_RE.match(url.path):
                if method == "GET":
                    items = cluster.list_deployments(match.group(1))
                    return self._send(200, _list("DeploymentList", items))
                if method == "POST":
                    return self._send(201, cluster.create_deployment(match.group(1), self._body()))
            if (match := REPLICASETS_RE.match(url.path)) and method == "GET":
                selector = query.get("labelSelector", [""])[0]
                items = cluster.list_replica_sets(match.group(1), selector)
                return self._send(200, _list("ReplicaSetList", items))
            raise ApiError(404, "NotFound", f"the server could not find {method} {url.path}")
        except ApiError as error:
            return self._send(error.code, error.status())
        except _Dropped:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("GET")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")


def _list(kind: str, items: list[dict]) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cluster: FakeCluster
    requests: list
    faults: FaultSwitch


class FakeKubeApi:
    """Runs the FAKE API server in a background thread; `url` is its address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = FakeCluster()
        self._server = _Server((host, port), _Handler)
        self._server.cluster = self.cluster
        self._server.requests = []
        # The FAULT SWITCH: tests make this fake fail on purpose through it.
        self.faults = self._server.faults = FaultSwitch()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """(method, path, content type) of every request, for tests to inspect."""
        return self._server.requests

    def start(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.faults.off()  # release requests held by hang()
        self._server.shutdown()
        self._server.server_close()
