"""Policy-as-code for Terraform plans: the Rego policies in `policies/` judge a
`terraform show -json` plan in the context of its deployment, and say whether
it may go ahead.

    evaluation = evaluate(plan, context)
    evaluation.outcome          # pass | warn | override_required | blocked
    evaluation.violations       # [Violation(policy, level, message, address)]
    evaluation.extra_approvals  # [ExtraApproval(policy, group, count, message)]
    evaluation.policy_sha256    # the policy files that decided, for approvals to bind to

Plain data in and out, no database: the plan job, the API and the benchmark
call it alike. The engine is regorus (Rego, in-process); docs/POLICIES.md
explains the choice, the input document, the policies and how to add one.

The plan and the context are checked before any policy runs, so a policy can
rely on their shape; bad input raises PlanDocumentError naming the problem.
A policy that fails to parse or to evaluate, or answers in the wrong shape,
raises PolicyBundleError: that is a fault of the policy files, not of the plan.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path

import regorus

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
# The rule that gathers every policy's answer (policies/gantry.rego).
DECISION_RULE = "data.gantry.decision"
NO_DECISION = (
    f"{DECISION_RULE} is undefined: the policy directory needs gantry.rego, which defines it"
)
# Kept equal to environments.choices.Tier (a test checks it); not imported,
# so this module stays plain Python.
TIERS = ("development", "staging", "production")
# Every action Terraform writes in change.actions (1.0 to 1.9). An action
# the policies were not written for fails the check rather than passing.
ACTIONS = frozenset({"no-op", "create", "read", "update", "delete", "forget"})
# Terraform raises the major version of its JSON format on breaking changes.
FORMAT_MAJORS = (0, 1)
FORMAT_VERSION_RE = re.compile(r"(\d+)\.(\d+)")
CONTEXT_KEYS = frozenset({
    "application", "environment", "tier", "release", "requester", "cost",
    "cost_increase_limit_usd", "cost_approval_group", "now", "freeze_override_active",
})  # fmt: skip
COST_KEYS = ("monthly_total_usd", "previous_monthly_usd", "delta_usd")
# Bundles each thread keeps compiled; more only when policy files change under
# a running process (or tests point at many directories).
ENGINES_PER_THREAD = 4


class Level(StrEnum):
    """How much a violation weighs, from least to most."""

    ADVISORY = "advisory"
    SOFT_MANDATORY = "soft_mandatory"
    HARD_MANDATORY = "hard_mandatory"


class Outcome(StrEnum):
    PASS = "pass"  # no violation
    WARN = "warn"  # advisory violations only
    OVERRIDE_REQUIRED = "override_required"  # a soft-mandatory one, none hard
    BLOCKED = "blocked"  # a hard-mandatory one


LEVEL_RANK = {Level.ADVISORY: 0, Level.SOFT_MANDATORY: 1, Level.HARD_MANDATORY: 2}


class PlanDocumentError(ValueError):
    """The plan or the context is not what the policies read; the message
    names the field and the problem."""


class PolicyBundleError(RuntimeError):
    """The policy files cannot be read, parsed or evaluated, or a policy
    answered in the wrong shape."""


@dataclass(frozen=True)
class Violation:
    policy: str
    level: Level
    message: str
    address: str | None  # the plan's resource address; None for the plan as a whole

    def as_dict(self) -> dict:
        return {"policy": self.policy, "level": self.level.value, "message": self.message,
                "address": self.address}  # fmt: skip


@dataclass(frozen=True)
class ExtraApproval:
    """A policy asks for `count` more approvals from members of `group`, on
    top of the environment's own rule. Not a violation: it changes who must
    approve, not whether the plan may go ahead."""

    policy: str
    group: str
    count: int
    message: str

    def as_dict(self) -> dict:
        return {"policy": self.policy, "group": self.group, "count": self.count,
                "message": self.message}  # fmt: skip


@dataclass(frozen=True)
class PolicyEvaluation:
    outcome: Outcome
    violations: list[Violation]
    extra_approvals: list[ExtraApproval]
    policy_sha256: str

    def as_dict(self) -> dict:
        return {
            "outcome": self.outcome.value,
            "violations": [v.as_dict() for v in self.violations],
            "extra_approvals": [a.as_dict() for a in self.extra_approvals],
            "policy_sha256": self.policy_sha256,
        }


@dataclass(frozen=True)
class PolicyBundle:
    """The policy files as read once: what is hashed is what is compiled."""

    directory: Path
    sha256: str
    modules: tuple[tuple[str, str], ...]  # (path relative to the directory, source)


# -- the API ----------------------------------------------------------------------


def evaluate(plan: dict, context: dict, policy_dir: Path | None = None) -> PolicyEvaluation:
    """Judge a parsed `terraform show -json` plan with the policies in
    `policy_dir` (default: the repository's policies/)."""
    check_plan(plan)
    policy_context = check_context(context)
    bundle = read_bundle(policy_dir)
    decision = _decide(bundle, {"plan": plan, "context": policy_context})
    violations = _violations(decision)
    return PolicyEvaluation(
        outcome=outcome_of(violations),
        violations=violations,
        extra_approvals=_extra_approvals(decision),
        policy_sha256=bundle.sha256,
    )


def policy_bundle_sha256(policy_dir: Path | None = None) -> str:
    """SHA-256 of the policy files, which approvals bind to (see read_bundle)."""
    return read_bundle(policy_dir).sha256


def parse_plan_document(raw: bytes | bytearray | str | dict) -> dict:
    """A plan from `terraform show -json` output (bytes or text), parsed and checked."""
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PlanDocumentError(
                f"plan is not UTF-8 text: {exc.reason} at byte {exc.start}"
            ) from None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise PlanDocumentError(
                f"plan is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    check_plan(raw)
    return raw


def outcome_of(violations: list[Violation]) -> Outcome:
    levels = {v.level for v in violations}
    if Level.HARD_MANDATORY in levels:
        return Outcome.BLOCKED
    if Level.SOFT_MANDATORY in levels:
        return Outcome.OVERRIDE_REQUIRED
    if levels:
        return Outcome.WARN
    return Outcome.PASS


# -- checking the input -------------------------------------------------------------


def check_plan(plan: object) -> None:
    """Raise PlanDocumentError unless `plan` has the shape the policies read."""
    if not isinstance(plan, dict):
        raise PlanDocumentError(
            f"not a terraform show -json document: expected a JSON object, got {_kind(plan)}"
        )
    version = plan.get("format_version")
    if version is None:
        raise PlanDocumentError("not a terraform show -json document: format_version missing")
    match = FORMAT_VERSION_RE.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise PlanDocumentError(
            f'plan.format_version must be a version such as "1.2", got {_shown(version)}'
        )
    if int(match.group(1)) not in FORMAT_MAJORS:
        raise PlanDocumentError(
            f"plan.format_version {version} is not supported: this evaluator reads "
            "the 0.x and 1.x formats"
        )
    if "errored" in plan and not isinstance(plan["errored"], bool):
        raise PlanDocumentError("plan.errored must be true or false")
    if plan.get("errored") is True:
        raise PlanDocumentError("plan.errored is true: Terraform could not finish this plan")
    if "resource_changes" not in plan and "planned_values" not in plan:
        # `terraform show -json` without a plan file describes the state.
        raise PlanDocumentError(
            "not a plan: the document has neither resource_changes nor planned_values "
            "(the output of terraform show -json without a plan file describes a state)"
        )
    changes = plan.get("resource_changes", [])
    if not isinstance(changes, list):
        raise PlanDocumentError("plan.resource_changes must be a list")
    for position, resource_change in enumerate(changes):
        _check_resource_change(f"plan.resource_changes[{position}]", resource_change)


def _check_resource_change(where: str, rc: object) -> None:
    if not isinstance(rc, dict):
        raise PlanDocumentError(f"{where} must be an object, got {_kind(rc)}")
    for key in ("address", "type"):
        if not isinstance(rc.get(key), str) or not rc[key]:
            raise PlanDocumentError(f"{where}.{key} must be a non-empty string")
    if rc.get("mode", "managed") not in ("managed", "data"):
        raise PlanDocumentError(f'{where}.mode must be "managed" or "data"')
    for key in ("name", "module_address"):
        if key in rc and not isinstance(rc[key], str):
            raise PlanDocumentError(f"{where}.{key} must be a string")
    index = rc.get("index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int | str)):
        raise PlanDocumentError(f"{where}.index must be a number or a string")
    change = rc.get("change")
    if not isinstance(change, dict):
        raise PlanDocumentError(f"{where}.change must be an object")
    actions = change.get("actions")
    if not isinstance(actions, list):
        raise PlanDocumentError(f"{where}.change.actions must be a list")
    if not actions:
        raise PlanDocumentError(f"{where}.change.actions must not be empty")
    for position, action in enumerate(actions):
        if not isinstance(action, str) or action not in ACTIONS:  # a dict is unhashable
            raise PlanDocumentError(
                f"{where}.change.actions[{position}] must be one of "
                f"{', '.join(sorted(ACTIONS))}, got {_shown(action)}"
            )
    for side in ("before", "after"):
        if change.get(side) is not None and not isinstance(change[side], dict):
            raise PlanDocumentError(f"{where}.change.{side} must be an object or null")
    if ("create" in actions or "update" in actions) and change.get("after") is None:
        raise PlanDocumentError(
            f"{where}.change.after must be an object: the resource is "
            f"{'created' if 'create' in actions else 'updated'}"
        )
    if "after_unknown" in change and not isinstance(change["after_unknown"], dict | bool):
        raise PlanDocumentError(f"{where}.change.after_unknown must be an object")
    replace_paths = change.get("replace_paths", [])
    if not isinstance(replace_paths, list) or not all(
        isinstance(path, list)
        and all(isinstance(step, str | int) and not isinstance(step, bool) for step in path)
        for path in replace_paths
    ):
        raise PlanDocumentError(
            f"{where}.change.replace_paths must be a list of attribute paths "
            "(lists of names and indexes)"
        )


def check_context(context: object) -> dict:
    """The context checked and made plain for the policies: amounts as
    numbers, `now` as ISO 8601 text. Raises PlanDocumentError naming the field."""
    if not isinstance(context, dict):
        raise PlanDocumentError(f"context must be an object, got {_kind(context)}")
    missing = sorted(CONTEXT_KEYS - context.keys())
    if missing:
        raise PlanDocumentError(f"context is missing {', '.join(missing)}")
    # A misspelt key would silently switch a policy off; refuse it instead.
    unknown = sorted(context.keys() - CONTEXT_KEYS)
    if unknown:
        raise PlanDocumentError(f"context has unknown keys: {', '.join(map(str, unknown))}")
    plain: dict = {}
    for key in ("application", "environment", "release", "requester"):
        if not isinstance(context[key], str) or not context[key]:
            raise PlanDocumentError(f"context.{key} must be a non-empty string")
        plain[key] = context[key]
    if context["tier"] not in TIERS:
        raise PlanDocumentError(
            f"context.tier must be one of {', '.join(TIERS)}, got {_shown(context['tier'])}"
        )
    plain["tier"] = context["tier"]
    cost = context["cost"]
    if cost is not None:
        if not isinstance(cost, dict):
            raise PlanDocumentError("context.cost must be an object or null")
        extra = sorted(cost.keys() - set(COST_KEYS))
        if extra:
            raise PlanDocumentError(f"context.cost has unknown keys: {', '.join(map(str, extra))}")
        cost = {key: _amount(cost.get(key), f"context.cost.{key}") for key in COST_KEYS}
    plain["cost"] = cost
    limit = context["cost_increase_limit_usd"]
    if limit is not None:
        limit = _amount(limit, "context.cost_increase_limit_usd")
        if limit < 0:
            raise PlanDocumentError("context.cost_increase_limit_usd must not be negative")
    plain["cost_increase_limit_usd"] = limit
    group = context["cost_approval_group"]
    if group is not None and (not isinstance(group, str) or not group):
        raise PlanDocumentError("context.cost_approval_group must be a non-empty string or null")
    if limit is not None and group is None:
        raise PlanDocumentError(
            "context.cost_approval_group is needed when cost_increase_limit_usd is set: "
            "it names who approves a larger increase"
        )
    plain["cost_approval_group"] = group
    plain["now"] = _moment(context["now"])
    if not isinstance(context["freeze_override_active"], bool):
        raise PlanDocumentError("context.freeze_override_active must be true or false")
    plain["freeze_override_active"] = context["freeze_override_active"]
    return plain


def _amount(value: object, where: str) -> float:
    """US dollars as a finite number; decimal text (as environments.pricing
    writes amounts) is accepted too."""
    if isinstance(value, bool) or value is None:
        raise PlanDocumentError(f"{where} must be a number")
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except InvalidOperation:
            raise PlanDocumentError(f"{where} must be a number, got {_shown(value)}") from None
    if not isinstance(value, int | float | Decimal):
        raise PlanDocumentError(f"{where} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise PlanDocumentError(f"{where} must be a finite number")
    return number


def _moment(value: object) -> str:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise PlanDocumentError(
                f"context.now must be an ISO 8601 time, got {_shown(value)}"
            ) from None
    elif isinstance(value, datetime):
        moment = value
    else:
        raise PlanDocumentError("context.now must be an ISO 8601 time")
    if moment.utcoffset() is None:
        raise PlanDocumentError("context.now must carry a UTC offset (2026-03-02T10:00:00Z)")
    return moment.isoformat()


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null", int: "a number", float: "a number"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> None:
    raise PlanDocumentError(f"plan is not JSON: {name} is not a JSON number")


# -- the policy files ---------------------------------------------------------------


def read_bundle(policy_dir: Path | str | None = None) -> PolicyBundle:
    """Read every .rego file under the directory (hidden ones aside).

    The SHA-256 covers, for each file in order of its relative POSIX path:
    the path, a NUL byte, the content's length in bytes as decimal digits, a
    NUL byte, and the content. Renaming, moving, adding or removing a file
    changes it, as does any edit."""
    directory = Path(policy_dir) if policy_dir is not None else POLICY_DIR
    if not directory.is_dir():
        raise PolicyBundleError(f"no policy directory at {directory}")
    paths = sorted(
        (p.relative_to(directory).as_posix(), p)
        for p in directory.rglob("*.rego")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if not paths:
        raise PolicyBundleError(f"no .rego files in {directory}")
    digest = hashlib.sha256()
    modules = []
    for relative, path in paths:
        content = path.read_bytes()
        digest.update(relative.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
        try:
            modules.append((relative, content.decode("utf-8")))
        except UnicodeDecodeError:
            raise PolicyBundleError(f"{relative} is not UTF-8 text") from None
    return PolicyBundle(directory, digest.hexdigest(), tuple(modules))


# A regorus engine may only be used by the thread that made it (the binding
# checks), so each thread compiles a bundle once and keeps it, keyed by the
# bundle's hash: a changed file is a new key, never a stale engine.
_per_thread = threading.local()


def _engine(bundle: PolicyBundle) -> regorus.Engine:
    engines: OrderedDict[str, regorus.Engine] | None = getattr(_per_thread, "engines", None)
    if engines is None:
        engines = _per_thread.engines = OrderedDict()
    engine = engines.get(bundle.sha256)
    if engine is None:
        engine = engines[bundle.sha256] = _build_engine(bundle)
        while len(engines) > ENGINES_PER_THREAD:
            engines.popitem(last=False)
    else:
        engines.move_to_end(bundle.sha256)
    return engine


def _build_engine(bundle: PolicyBundle) -> regorus.Engine:
    engine = regorus.Engine()
    for relative, source in bundle.modules:
        try:
            engine.add_policy(relative, source)
        except RuntimeError as exc:
            raise PolicyBundleError(f"{relative} does not parse: {_engine_message(exc)}") from None
    if "data.gantry" not in engine.get_packages():
        raise PolicyBundleError(NO_DECISION)
    return engine


def _decide(bundle: PolicyBundle, document: dict) -> object:
    engine = _engine(bundle)
    try:
        engine.set_input(document)
    except (TypeError, ValueError) as exc:
        raise PlanDocumentError(f"plan holds a value that is not JSON data: {exc}") from None
    try:
        return engine.eval_rule(DECISION_RULE)
    except RuntimeError as exc:
        message = _engine_message(exc)
        if message == "not a valid rule path":  # regorus' words for a rule nobody defines
            raise PolicyBundleError(NO_DECISION) from None
        raise PolicyBundleError(f"the policies failed on this plan: {message}") from None
    finally:
        # Plans carry secrets (a database password in after): keep none
        # in memory past the call.
        engine.set_input({})


def _engine_message(exc: Exception) -> str:
    """regorus' message without the Rust backtrace that RUST_BACKTRACE adds."""
    return str(exc).split("Stack backtrace:")[0].strip()


# -- reading the answer ------------------------------------------------------------


def _violations(decision: object) -> list[Violation]:
    entries = _entries(decision, "violations")
    violations = []
    for entry in entries:
        policy = _policy_name(entry)
        where = f"policy {policy}: violation {_shown(entry)}"
        if entry.get("level") not in tuple(Level):
            raise PolicyBundleError(f"{where} has no level among {', '.join(Level)}")
        if not isinstance(entry.get("message"), str) or not entry["message"]:
            raise PolicyBundleError(f"{where} has no message")
        address = entry.get("address")
        if address is not None and not isinstance(address, str):
            raise PolicyBundleError(f"{where}: address must be a string or null")
        violations.append(Violation(policy, Level(entry["level"]), entry["message"], address))
    violations.sort(key=lambda v: (-LEVEL_RANK[v.level], v.policy, v.address or "", v.message))
    return violations


def _extra_approvals(decision: object) -> list[ExtraApproval]:
    approvals = []
    for entry in _entries(decision, "extra_approvals"):
        policy = _policy_name(entry)
        where = f"policy {policy}: extra approval {_shown(entry)}"
        if not isinstance(entry.get("group"), str) or not entry["group"]:
            raise PolicyBundleError(f"{where} names no group")
        count = entry.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise PolicyBundleError(f"{where}: count must be a whole number of at least 1")
        if not isinstance(entry.get("message"), str) or not entry["message"]:
            raise PolicyBundleError(f"{where} has no message")
        approvals.append(ExtraApproval(policy, entry["group"], count, entry["message"]))
    approvals.sort(key=lambda a: (a.policy, a.group, a.message))
    return approvals


def _policy_name(entry: dict) -> str:
    if not isinstance(entry.get("policy"), str) or not entry["policy"]:
        raise PolicyBundleError(
            f"{DECISION_RULE} gave an answer without its policy: {_shown(entry)}"
        )
    return entry["policy"]


def _entries(decision: object, key: str) -> list[dict]:
    if decision is None:
        raise PolicyBundleError(NO_DECISION)
    entries = decision.get(key) if isinstance(decision, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PolicyBundleError(f"{DECISION_RULE}.{key} must be a list of objects")
    return entries
