"""The shape of an environment's deployment process: each step kind's config,
validated when an admin saves it (and again when a step runs), and the
`${…}` references config may hold.

The catalog owns what a step *is*; the engine (deployments/runners/) owns
carrying it out, and asks `validate_step_config` for the normalised config.
Every error names the key it is about, for the admin form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from environments.choices import StepKind
from portal.cloud.alarm_sources import parse_matcher
from portal.cloud.errors import CloudError

# `${release.version}`, `${environment}`, `${artifact.fraud-api}`, `${var.NAME}`, `${secret.NAME}`
REFERENCE_RE = re.compile(r"\$\{([a-z]+)(?:\.([A-Za-z0-9_.\-]+))?\}")


class ConfigError(ValueError):
    """A step's config is wrong; `key` names the offending key for the admin form."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


# -- references --------------------------------------------------------------------


@dataclass
class References:
    """What `${…}` in a step's config (or an environment's alarm sources) stands for."""

    environment_name: str = ""
    release_version: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    secret_values: dict[str, Any] = field(default_factory=dict)

    def expand(self, value: Any) -> Any:
        """Resolve `${…}` references in strings (recursively in lists and dicts).

        Deliberately not `str.format`: config is written by admins and must not
        reach object attributes. An unknown reference is a CloudError naming it.
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
                raise CloudError(f"{reference}: there is no {scope} named {name!r}.")
            return str(sources[scope][name])
        raise CloudError(
            f"{reference}: unknown reference; use ${{environment}}, ${{release.version}}, "
            "${artifact.SERVICE}, ${var.NAME} or ${secret.NAME}."
        )


# -- validation helpers (each raises ConfigError naming the key) ------------------


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


def _start(config: Any, keys: Iterable[str]) -> dict:
    config = require_mapping(config)
    reject_unknown(config, keys)
    return config


# -- the step kinds ------------------------------------------------------------------


def terraform_config(config: Any) -> dict:
    """`terraform`: a module directory (or a git checkout), its workspace and
    variables; see deployments/runners/terraform.py."""
    keys = ("path", "git", "subdir", "workspace", "variables", "backend_config",
            "timeout_seconds", "plan_lock_wait_seconds")  # fmt: skip
    config = _start(config, keys)
    if ("path" in config) == ("git" in config):
        raise ConfigError("path", "give either path (a directory) or git (url and ref)")
    git = None
    if "git" in config:
        git = require_mapping(config["git"], "git")
        with nested("git"):
            reject_unknown(git, ("url", "ref"))
            git = {"url": get_str(git, "url"), "ref": get_str(git, "ref", "main")}
    variables = config.get("variables", {})
    if not isinstance(variables, dict):
        raise ConfigError("variables", "must be an object of Terraform variable values")
    subdir = get_str(config, "subdir", "")
    if ".." in Path(subdir).parts or Path(subdir).is_absolute():
        raise ConfigError("subdir", "must be a relative path inside the repository")
    return {
        "path": get_str(config, "path") if "path" in config else "",
        "git": git,
        "subdir": subdir,
        "workspace": get_str(config, "workspace", "${environment}"),
        "variables": variables,
        "backend_config": get_str_map(config, "backend_config"),
        "timeout_seconds": get_number(config, "timeout_seconds", 1800, 1),
        # A plan may be asked for while another deployment of the environment
        # applies to the same state: it waits for that lock (and then plans
        # against the new state). The apply never waits: the environment is
        # Gantry's alone then, so a held lock is someone else's, reported at
        # once with its holder.
        "plan_lock_wait_seconds": get_number(config, "plan_lock_wait_seconds", 300, 0, 3600),
    }


def _wait_settings(config: dict) -> dict:
    return {
        "timeout_seconds": get_number(config, "timeout_seconds", 900, 1),
        "poll_seconds": get_number(config, "poll_seconds", 10, 0.05, 300),
    }


def ecs_rolling_config(config: Any) -> dict:
    config = _start(config, ("cluster", "services", "container_artifacts", "timeout_seconds",
                             "poll_seconds"))  # fmt: skip
    services = get_str_list(config, "services")
    if not services:
        raise ConfigError("services", "name at least one ECS service")
    return {
        "cluster": get_str(config, "cluster"),
        "services": services,
        "container_artifacts": get_str_map(config, "container_artifacts"),
        **_wait_settings(config),
    }


COLOURS = ("blue", "green")


def ecs_blue_green_config(config: Any) -> dict:
    config = _start(config, ("cluster", "service", "blue", "green", "load_balancer",
                             "listener_port", "listener_arn", "weights", "pause_seconds",
                             "container_artifacts", "timeout_seconds", "poll_seconds"))  # fmt: skip
    colours = {}
    for colour in COLOURS:
        value = config.get(colour)
        if not isinstance(value, dict):
            raise ConfigError(colour, "must be an object with service and target_group")
        with nested(colour):
            reject_unknown(value, ("service", "target_group"))
            colours[colour] = {
                "service": get_str(value, "service"),
                "target_group": get_str(value, "target_group"),
            }
    if "listener_arn" not in config and "load_balancer" not in config:
        raise ConfigError("listener_arn", "give listener_arn, or load_balancer and port")
    weights = config.get("weights", [100])
    if (
        not isinstance(weights, list)
        or not weights
        or not all(isinstance(w, int) and not isinstance(w, bool) for w in weights)
        or not all(0 < w <= 100 for w in weights)
        or weights != sorted(weights)
        or weights[-1] != 100
    ):
        raise ConfigError("weights", "must be rising percentages ending at 100, e.g. [10, 50, 100]")
    return {
        "cluster": get_str(config, "cluster"),
        "service": get_str(config, "service", ""),
        **colours,
        "listener_arn": get_str(config, "listener_arn", ""),
        "load_balancer": get_str(config, "load_balancer", ""),
        "listener_port": int(get_number(config, "listener_port", 80, 1, 65535)),
        "weights": weights,
        "pause_seconds": get_number(config, "pause_seconds", 60, 0),
        "container_artifacts": get_str_map(config, "container_artifacts"),
        **_wait_settings(config),
    }


def k8s_rolling_config(config: Any) -> dict:
    config = _start(config, ("namespace", "deployments", "container_artifacts", "timeout_seconds",
                             "poll_seconds"))  # fmt: skip
    deployments = get_str_list(config, "deployments")
    if not deployments:
        raise ConfigError("deployments", "name at least one Deployment")
    return {
        "namespace": get_str(config, "namespace", "${environment}"),
        "deployments": deployments,
        "container_artifacts": get_str_map(config, "container_artifacts"),
        "timeout_seconds": get_number(config, "timeout_seconds", 600, 1),
        "poll_seconds": get_number(config, "poll_seconds", 2, 0.05, 300),
    }


def rds_snapshot_config(config: Any) -> dict:
    config = _start(config, ("db_instance", "timeout_seconds", "poll_seconds"))
    return {
        "db_instance": get_str(config, "db_instance"),
        "timeout_seconds": get_number(config, "timeout_seconds", 1800, 1),
        "poll_seconds": get_number(config, "poll_seconds", 15, 0.05, 300),
    }


def command_config(config: Any) -> dict:
    config = _start(config, ("argv", "env", "cwd", "timeout_seconds", "ok_exit_codes",
                             "rollback_argv"))  # fmt: skip
    argv = get_str_list(config, "argv")
    if not argv:
        raise ConfigError("argv", "must name a program")
    ok_codes = config.get("ok_exit_codes", [0])
    if not isinstance(ok_codes, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in ok_codes
    ):
        raise ConfigError("ok_exit_codes", "must be a list of integers")
    cwd = get_str(config, "cwd", "")
    if cwd and (Path(cwd).is_absolute() or ".." in Path(cwd).parts):
        raise ConfigError("cwd", "must be a path inside the step's working directory")
    return {
        "argv": argv,
        "env": get_str_map(config, "env"),
        "cwd": cwd,
        "timeout_seconds": get_number(config, "timeout_seconds", 600, 1),
        "ok_exit_codes": ok_codes or [0],
        "rollback_argv": get_str_list(config, "rollback_argv", []),
    }


def http_check_config(config: Any) -> dict:
    config = _start(config, ("urls", "timeout_seconds", "interval_seconds",
                             "request_timeout_seconds", "smoke"))  # fmt: skip
    urls = get_str_list(config, "urls", [])
    smoke = config.get("smoke")
    if smoke is not None:
        if not isinstance(smoke, dict):
            raise ConfigError("smoke", "must be an object with url, method, json")
        with nested("smoke"):
            reject_unknown(smoke, ("url", "method", "json", "expect_status", "expect_keys"))
            method = get_str(smoke, "method", "POST").upper()
            if method not in ("GET", "POST", "PUT"):
                raise ConfigError("method", "must be GET, POST or PUT")
            smoke = {
                "url": get_str(smoke, "url"),
                "method": method,
                "json": smoke.get("json"),
                "expect_status": int(get_number(smoke, "expect_status", 200, 100, 599)),
                "expect_keys": get_str_list(smoke, "expect_keys", []),
            }
    return {
        "urls": urls,
        "timeout_seconds": get_number(config, "timeout_seconds", 120, 0.1),
        "interval_seconds": get_number(config, "interval_seconds", 5, 0.05, 300),
        "request_timeout_seconds": get_number(config, "request_timeout_seconds", 5, 0.1, 300),
        "smoke": smoke,
    }


def _alarm_source_sections(config: dict) -> tuple[dict | None, dict | None]:
    """The `cloudwatch` and `alertmanager` sections shared by bake steps and
    an environment's alarm sources."""
    cloudwatch = alertmanager = None
    if config.get("cloudwatch") is not None:
        section = config["cloudwatch"]
        if not isinstance(section, dict):
            raise ConfigError("cloudwatch", "must be an object")
        with nested("cloudwatch"):
            reject_unknown(section, ("alarm_names", "alarm_prefix"))
            cloudwatch = {
                "alarm_names": get_str_list(section, "alarm_names", []),
                "alarm_prefix": get_str(section, "alarm_prefix", ""),
            }
        if not cloudwatch["alarm_names"] and not cloudwatch["alarm_prefix"]:
            raise ConfigError("cloudwatch.alarm_names", "give alarm_names or alarm_prefix")
    if config.get("alertmanager") is not None:
        section = config["alertmanager"]
        if not isinstance(section, dict):
            raise ConfigError("alertmanager", "must be an object with url and matchers")
        with nested("alertmanager"):
            reject_unknown(section, ("url", "matchers"))
            matchers = get_str_list(section, "matchers", [])
            url = get_str(section, "url").rstrip("/")
            # Read server-side every 30 s: no file://, ftp:// or other schemes
            # (a ${…} reference is checked once expanded, when read).
            if not url.startswith(("http://", "https://", "${")):
                raise ConfigError("alertmanager.url", "must be an http:// or https:// URL")
            alertmanager = {"url": url, "matchers": matchers}
        for matcher in matchers:
            # A bad matcher or regex must fail when the config is saved, not at every poll.
            try:
                parse_matcher(matcher)
            except ValueError as error:
                raise ConfigError("alertmanager.matchers", str(error)) from None
    if cloudwatch is None and alertmanager is None:
        raise ConfigError("cloudwatch", "watch at least one source: cloudwatch or alertmanager")
    return cloudwatch, alertmanager


def bake_config(config: Any) -> dict:
    config = _start(config, ("duration_seconds", "poll_seconds", "cloudwatch", "alertmanager"))
    cloudwatch, alertmanager = _alarm_source_sections(config)
    return {
        "duration_seconds": get_number(config, "duration_seconds", 600, 0),
        "poll_seconds": get_number(config, "poll_seconds", 15, 0.05, 600),
        "cloudwatch": cloudwatch,
        "alertmanager": alertmanager,
    }


STEP_CONFIGS: dict[str, Callable[[Any], dict]] = {
    StepKind.TERRAFORM: terraform_config,
    StepKind.ECS_ROLLING: ecs_rolling_config,
    StepKind.ECS_BLUE_GREEN: ecs_blue_green_config,
    StepKind.K8S_ROLLING: k8s_rolling_config,
    StepKind.RDS_SNAPSHOT: rds_snapshot_config,
    StepKind.COMMAND: command_config,
    StepKind.HTTP_CHECK: http_check_config,
    StepKind.BAKE: bake_config,
}


def validate_step_config(kind: str, config: Any) -> dict:
    """The normalised config, or ConfigError naming the bad key."""
    try:
        validate = STEP_CONFIGS[kind]
    except KeyError:
        raise ConfigError("kind", f"unknown step kind {kind!r}") from None
    return validate(config)


def validate_alarm_sources(value: object) -> dict:
    """`{}` (no sources) or bake-shaped `cloudwatch`/`alertmanager` sections;
    raises ConfigError naming the key. Returns the normalised sections."""
    if not value:
        return {}
    value = require_mapping(value, "alarm_sources")
    reject_unknown(value, ("cloudwatch", "alertmanager"))
    cloudwatch, alertmanager = _alarm_source_sections(value)
    sections = {"cloudwatch": cloudwatch, "alertmanager": alertmanager}
    return {key: section for key, section in sections.items() if section}
