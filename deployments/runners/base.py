"""What every step runner gets and gives: the step context, the runner interface,
config validation helpers and the errors the deploy engine understands.

The module imports nothing from Django so runners can be driven (and tested)
with plain values; `StepContext.for_deployment` fills those values from the
models when the engine runs a real deployment.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

    from deployments.models import Deployment

DEFAULT_REGION = "ca-central-1"

# `${release.version}`, `${environment}`, `${artifact.fraud-api}`, `${var.NAME}`, `${secret.NAME}`
REFERENCE_RE = re.compile(r"\$\{([a-z]+)(?:\.([A-Za-z0-9_.\-]+))?\}")


class StepFailed(Exception):
    """The step could not do its job; `message` tells a person what to do next.

    `outputs` carries what the runner had already changed when it failed, so
    the engine can still hand it to `rollback()`.
    """

    def __init__(self, message: str, *, outputs: dict | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.outputs = outputs or {}
        self.details = details


class StepCancelled(StepFailed):
    """Someone cancelled the deployment while this step ran; the step stopped cleanly."""


class ConfigError(ValueError):
    """A step's config is wrong; `key` names the offending key for the admin form."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class AwsAccess:
    """Builds boto3 sessions and clients for one environment.

    Honours `AWS_ENDPOINT_URL` (the sandbox's moto server) and, when a role is
    given, assumes it once per step so all clients share the credentials.
    Calling the object returns the session.
    """

    region: str = DEFAULT_REGION
    role_arn: str = ""
    endpoint_url: str | None = field(default_factory=lambda: os.environ.get("AWS_ENDPOINT_URL"))
    session_name: str = "gantry-deploy"

    @cached_property
    def _session(self) -> boto3.Session:
        base = boto3.Session(region_name=self.region)
        if not self.role_arn:
            return base
        sts = base.client("sts", endpoint_url=self.endpoint_url or None)
        try:
            answer = sts.assume_role(RoleArn=self.role_arn, RoleSessionName=self.session_name)
        except ClientError as error:  # refused: AccessDenied, a malformed ARN, ...
            detail = error.response.get("Error", {})
            reason = f"{detail.get('Code', 'error')}: {detail.get('Message', error)}"
            raise StepFailed(f"Assuming role {self.role_arn} failed: {reason}") from None
        except BotoCoreError as error:  # no credentials, endpoint unreachable, bad parameter
            raise StepFailed(f"Assuming role {self.role_arn} failed: {error}") from None
        credentials = answer["Credentials"]
        return boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self.region,
        )

    def __call__(self) -> boto3.Session:
        return self._session

    def client(self, service: str, **options):
        """A client of the session, at the sandbox's endpoint when one is set;
        `options` go to boto3 (e.g. `config=` with timeouts)."""
        return self._session.client(service, endpoint_url=self.endpoint_url or None, **options)


@dataclass
class KubeAccess:
    """Builds a `kubernetes` ApiClient: from a kubeconfig context in production,
    or for a given API URL. `KUBE_API_URL` (the sandbox's fake API server) wins
    over the context, as `AWS_ENDPOINT_URL` wins over AWS's own endpoints."""

    context: str = ""
    host: str | None = field(default_factory=lambda: os.environ.get("KUBE_API_URL"))

    def __call__(self) -> ApiClient:
        from kubernetes import client, config

        if self.host:
            return client.ApiClient(client.Configuration(host=self.host))
        return config.new_client_from_config(context=self.context or None)


def _discard_log(text: str, stream: str = "stdout") -> None:
    """Default log sink for contexts built without one."""


@dataclass
class StepContext:
    """Everything a runner may use while it runs one step of one deployment.

    `log(text, stream)` receives every output line (the engine masks secrets
    before storing it; runners never log secret values themselves).
    `plan` is what `plan()` returned in the planning phase; `previous_outputs`
    is what this step returned in the last successful deployment here.
    """

    config: dict
    workdir: Path
    log: Callable[..., None] = _discard_log
    cancelled: threading.Event = field(default_factory=threading.Event)
    deployment: Deployment | None = None
    environment_name: str = ""
    release_version: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    secret_values: dict[str, Any] = field(default_factory=dict)
    health_urls: list[str] = field(default_factory=list)
    aws: AwsAccess = field(default_factory=AwsAccess)
    kube_api_client: Callable[[], Any] = field(default_factory=KubeAccess)
    plan: dict | None = None
    previous_outputs: dict | None = None

    @classmethod
    def for_deployment(
        cls,
        deployment: Deployment,
        config: dict,
        *,
        workdir: Path,
        log: Callable[..., None],
        cancelled: threading.Event | None = None,
        plan: dict | None = None,
        previous_outputs: dict | None = None,
    ) -> StepContext:
        environment = deployment.environment
        return cls(
            config=config,
            workdir=workdir,
            log=log,
            cancelled=cancelled or threading.Event(),
            deployment=deployment,
            environment_name=environment.slug,
            release_version=deployment.release.version,
            artifacts=deployment.artifact_map(),
            variables=dict(environment.variables or {}),
            secret_values=dict(environment.secret_variables or {}),
            health_urls=list(environment.health_urls or []),
            aws=AwsAccess(
                region=environment.region or DEFAULT_REGION, role_arn=environment.aws_role_arn
            ),
            kube_api_client=KubeAccess(context=environment.kube_context),
            plan=plan,
            previous_outputs=previous_outputs,
        )

    # -- helpers shared by the runners ------------------------------------------

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise StepCancelled("The deployment was cancelled.")

    def sleep(self, seconds: float) -> None:
        """Wait, but wake up at once (and stop) when the deployment is cancelled."""
        if self.cancelled.wait(max(seconds, 0)):
            raise StepCancelled("The deployment was cancelled.")

    def expand(self, value: Any) -> Any:
        """Resolve `${…}` references in strings (recursively in lists and dicts).

        Deliberately not `str.format`: config is written by admins and must not
        reach object attributes.
        """
        if isinstance(value, str):
            return REFERENCE_RE.sub(self._resolve, value)
        if isinstance(value, list):
            return [self.expand(item) for item in value]
        if isinstance(value, dict):
            return {key: self.expand(item) for key, item in value.items()}
        return value

    def _resolve(self, match: re.Match) -> str:
        scope, name = match.group(1), match.group(2)
        reference = match.group(0)
        if scope == "environment" and name is None:
            return self.environment_name
        if scope == "release" and name == "version":
            return self.release_version
        sources = {"artifact": self.artifacts, "var": self.variables, "secret": self.secret_values}
        if scope in sources and name is not None:
            if name not in sources[scope]:
                raise StepFailed(f"{reference}: there is no {scope} named {name!r}.")
            return str(sources[scope][name])
        raise StepFailed(
            f"{reference}: unknown reference; use ${{environment}}, ${{release.version}}, "
            "${artifact.SERVICE}, ${var.NAME} or ${secret.NAME}."
        )


class Runner:
    """One step kind. Subclasses implement `validate_config`, `run`, `rollback`
    and, for kinds with a planning phase, `plan`."""

    kind: ClassVar[str] = ""
    has_plan: ClassVar[bool] = False

    def validate_config(self, config: dict) -> dict:
        raise NotImplementedError

    def plan(self, ctx: StepContext) -> dict:
        raise NotImplementedError(f"{self.kind} steps have no planning phase")

    def run(self, ctx: StepContext) -> dict:
        raise NotImplementedError

    def rollback(self, ctx: StepContext, outputs: dict) -> dict:
        raise NotImplementedError

    def config(self, ctx: StepContext) -> dict:
        """The step's validated config; a bad config fails the step, naming the key."""
        try:
            return self.validate_config(ctx.config)
        except ConfigError as exc:
            raise StepFailed(f"Invalid {self.kind} step config: {exc}") from None


# -- config validation helpers (each raises ConfigError naming the key) ---------


@contextmanager
def nested(prefix: str) -> Iterator[None]:
    """Validate a sub-object: errors inside name `prefix.key`."""
    try:
        yield
    except ConfigError as error:
        raise ConfigError(f"{prefix}.{error.key}", str(error).split(": ", 1)[1]) from None


def require_mapping(config: Any, key: str = "config") -> dict:
    if not isinstance(config, dict):
        raise ConfigError(key, "must be an object")
    return config


def reject_unknown(config: dict, allowed: Iterable[str]) -> None:
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; allowed: {', '.join(sorted(allowed))}")


def get_str(config: dict, key: str, default: str | None = None) -> str:
    value = config.get(key, default)
    if value is None:
        raise ConfigError(key, "is required")
    if not isinstance(value, str) or (not value.strip() and default is None):
        raise ConfigError(key, "must be a non-empty string")
    return value.strip()


def get_number(
    config: dict, key: str, default: float, minimum: float = 0, maximum: float = 86400
) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, "must be a number")
    if not minimum <= value <= maximum:
        raise ConfigError(key, f"must be between {minimum:g} and {maximum:g}")
    return value


def get_str_list(config: dict, key: str, default: list[str] | None = None) -> list[str]:
    value = config.get(key, default)
    if value is None:
        raise ConfigError(key, "is required")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, "must be a list of non-empty strings")
    return list(value)


def get_str_map(config: dict, key: str) -> dict[str, str]:
    value = config.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(key, "must be an object of strings")
    return dict(value)


class Deadline:
    """A point in time a wait must not pass."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining <= 0
