"""The monthly cost of a Terraform plan, priced resource by resource from the
bundled catalog (price_catalog.json), the way Infracost does it: hourly prices
× 730 hours, usage-based items at a documented default usage (marked
`usage_assumed`), both sides of every change so approvers see what the plan
adds to what runs now.

Three outcomes per resource, never a silent zero: priced (components),
free (listed with the reason there is no charge) or not priced (listed with
the reason, kept out of both totals so the delta stays like for like).

Pure Python over the `terraform show -json` document: the plan job, the API
and the benchmark call it without a database. docs/COSTS.md explains it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("price_catalog.json")
# Far above any real size or count; bigger values are typos or attacks on the total.
MAX_QUANTITY = Decimal(10**9)
HOURS = Decimal(730)
CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# What AWS bills by use and a plan cannot tell, per resource and month.
# Change these only together with docs/COSTS.md, which approvers read.
DEFAULT_USAGE = {
    "alb_lcu": Decimal(1),  # load balancer capacity units, on average over the month
    "nlb_nlcu": Decimal(1),
    "nat_gb_processed": Decimal(10),
    "s3_gb": Decimal(100),  # S3 Standard storage per bucket
    "log_gb_ingested": Decimal(5),  # per log group
    "ecr_gb": Decimal(1),  # image storage per repository
    "root_volume_gb": Decimal(8),  # an instance's root volume when the plan leaves it out
}
NO_CHARGE = "no charge"
FREE = {
    "aws_vpc": NO_CHARGE, "aws_subnet": NO_CHARGE, "aws_internet_gateway": NO_CHARGE,
    "aws_route_table": NO_CHARGE, "aws_route": NO_CHARGE,
    "aws_route_table_association": NO_CHARGE, "aws_security_group": NO_CHARGE,
    "aws_security_group_rule": NO_CHARGE, "aws_vpc_security_group_ingress_rule": NO_CHARGE,
    "aws_vpc_security_group_egress_rule": NO_CHARGE, "aws_ecs_cluster": NO_CHARGE,
    "aws_lb_target_group": NO_CHARGE, "aws_lb_listener": NO_CHARGE,
    "aws_lb_listener_rule": NO_CHARGE, "aws_lb_target_group_attachment": NO_CHARGE,
    "aws_db_subnet_group": NO_CHARGE, "aws_db_parameter_group": NO_CHARGE,
    "aws_elasticache_subnet_group": NO_CHARGE, "aws_ecr_lifecycle_policy": NO_CHARGE,
    "aws_ecr_repository_policy": NO_CHARGE, "aws_kms_alias": NO_CHARGE,
    "aws_appautoscaling_target": NO_CHARGE, "aws_appautoscaling_policy": NO_CHARGE,
    "aws_sns_topic_subscription": NO_CHARGE,
    "aws_acm_certificate": "no charge (public certificate)",
    "aws_route53_record": "no charge (queries are billed per use, not estimated)",
    "aws_sns_topic": "no standing charge (requests are billed per use, not estimated)",
    "aws_secretsmanager_secret_version": "no charge (priced on the secret)",
    "aws_ecs_task_definition": "no charge (its tasks are priced on the services that run them)",
    "null_resource": "no charge (Terraform-internal)",
    "terraform_data": "no charge (Terraform-internal)",
}  # fmt: skip
FREE_PREFIXES = (
    ("aws_iam_", NO_CHARGE),
    ("aws_s3_bucket_", "no charge (bucket settings; storage is priced on the bucket)"),
    ("random_", "no charge (Terraform-internal)"),
    ("time_", "no charge (Terraform-internal)"),
    ("tls_", "no charge (Terraform-internal)"),
)
MODULE_KEY_RE = re.compile(r"\[[^\]]*\]")


class PlanError(ValueError):
    """The document is not a `terraform show -json` plan; the message says why."""


class UnknownRegion(ValueError):
    """The catalog has no prices for this region."""


class NotPriced(Exception):
    """This resource cannot be priced from the catalog; the message says why."""


class Free(Exception):
    """This resource costs nothing by itself; the message says why."""


@dataclass(frozen=True)
class Catalog:
    """One region's prices, indexed once (see `catalog_for`)."""

    region: str
    prices: dict[str, Decimal]
    version: str
    source: str
    retrieved_on: str
    multi_az_factor: Decimal

    def price(self, key: str, what: str) -> Decimal:
        try:
            return self.prices[key]
        except KeyError:
            raise NotPriced(f"{what} is not in the price catalog for {self.region}") from None


@lru_cache(maxsize=1)
def _catalog_document() -> dict:
    return json.loads(CATALOG_PATH.read_text())


def known_regions() -> list[str]:
    return sorted(_catalog_document()["regions"])


@lru_cache(maxsize=32)
def catalog_for(region: str) -> Catalog:
    document = _catalog_document()
    if region not in document["regions"]:
        raise UnknownRegion(
            f"No prices for region {region!r}; the catalog has {', '.join(known_regions())}."
        )
    prices = {key: Decimal(value) for key, value in document["regions"][region].items()}
    return Catalog(
        region, prices, document["version"], document["source"], document["retrieved_on"],
        Decimal(document.get("rds_multi_az_factor", "2")),
    )  # fmt: skip


def plain(number: Decimal) -> str:
    """1460, 0.5, 2: no trailing zeros and no exponent (Decimal would print 1.46E+3)."""
    return format(number.normalize(), "f")


@dataclass(frozen=True)
class Component:
    """One billed item of a resource: quantity × unit price a month."""

    name: str
    unit: str
    quantity: Decimal
    unit_price: Decimal
    assumption: str = ""  # set when the quantity is a default usage, not from the plan

    @property
    def monthly(self) -> Decimal:
        return (self.quantity * self.unit_price).quantize(CENT, ROUND_HALF_UP)

    def as_json(self) -> dict:
        return {
            "name": self.name, "unit": self.unit, "quantity": plain(self.quantity),
            "unit_price_usd": str(self.unit_price), "monthly_usd": str(self.monthly),
            "usage_assumed": bool(self.assumption), "assumption": self.assumption,
        }  # fmt: skip


@dataclass
class ResourceCost:
    address: str
    type: str
    actions: list[str]
    components: list[Component]
    previous: Decimal
    note: str = ""

    @property
    def monthly(self) -> Decimal:
        return sum((c.monthly for c in self.components), ZERO)

    def as_json(self) -> dict:
        return {
            "address": self.address, "type": self.type, "actions": self.actions,
            "monthly_usd": str(self.monthly), "previous_monthly_usd": str(self.previous),
            "delta_usd": str(self.monthly - self.previous),
            "components": [c.as_json() for c in self.components], "note": self.note,
        }  # fmt: skip


@dataclass
class Estimate:
    """A plan's monthly cost after it is applied and before (what runs now)."""

    catalog: Catalog
    resources: list[ResourceCost] = field(default_factory=list)
    not_priced: list[dict] = field(default_factory=list)

    @property
    def monthly_total(self) -> Decimal:
        return sum((r.monthly for r in self.resources), ZERO)

    @property
    def previous_monthly(self) -> Decimal:
        return sum((r.previous for r in self.resources), ZERO)

    def as_json(self) -> dict:
        return {
            "region": self.catalog.region, "catalog_version": self.catalog.version,
            "catalog_source": self.catalog.source, "catalog_date": self.catalog.retrieved_on,
            "monthly_total_usd": str(self.monthly_total),
            "previous_monthly_usd": str(self.previous_monthly),
            "delta_usd": str(self.monthly_total - self.previous_monthly),
            "resources": [r.as_json() for r in self.resources], "not_priced": self.not_priced,
        }  # fmt: skip


def estimate_plan(plan_json: dict, region: str) -> Estimate:
    """Price every managed resource of a plan, after and before the change."""
    catalog = catalog_for(region)
    plan = _Plan(plan_json)
    estimate = Estimate(catalog)
    for change in plan.changes:
        address, kind = change["address"], change["type"]
        actions = list(change["change"]["actions"])
        free = FREE.get(kind) or next((r for p, r in FREE_PREFIXES if kind.startswith(p)), None)
        pricer = PRICERS.get(kind)
        if free is None and pricer is None:
            reason = f"{kind} is not in the price catalog"
            estimate.not_priced.append({"address": address, "type": kind, "reason": reason})
            continue
        if free is not None:
            estimate.resources.append(ResourceCost(address, kind, actions, [], ZERO, free))
            continue
        try:
            after, note = _price_side(pricer, plan, change, "after", catalog)
            before, _ = _price_side(pricer, plan, change, "before", catalog)
        except NotPriced as exc:
            estimate.not_priced.append({"address": address, "type": kind, "reason": str(exc)})
            continue
        previous = sum((c.monthly for c in before), ZERO)
        estimate.resources.append(ResourceCost(address, kind, actions, after, previous, note))
    return estimate


def _price_side(pricer, plan: _Plan, change: dict, side: str, catalog: Catalog):
    """(components, note) of one side; a side that costs nothing says why in the note."""
    if change["change"].get(side) is None:  # created (no before) or destroyed (no after)
        return [], ""
    try:
        return pricer(_Side(plan, change, side), catalog), ""
    except Free as exc:
        return [], str(exc)


class _Plan:
    """The plan document, indexed once: resource instances by module and
    address, configuration expressions by module path and address."""

    def __init__(self, document: dict) -> None:
        if not isinstance(document, dict) or "format_version" not in document:
            raise PlanError("Not a Terraform plan: expected `terraform show -json` output "
                            "(an object with format_version and resource_changes).")  # fmt: skip
        if not isinstance(document["format_version"], str):
            raise PlanError('format_version must be a string, e.g. "1.2".')
        changes = document.get("resource_changes", [])
        if not isinstance(changes, list):
            raise PlanError("resource_changes must be a list.")
        self.changes: list[dict] = []
        self.instances: dict[tuple[str, str], list[dict]] = {}
        self.task_definitions: dict[tuple[str, str], dict] = {}
        for position, change in enumerate(changes):
            _check_change(position, change)
            if change.get("mode", "managed") != "managed":
                continue
            self.changes.append(change)
            local = f"{change['type']}.{change.get('name', '')}"
            key = (change.get("module_address", ""), local)
            self.instances.setdefault(key, []).append(change)
            if change["type"] == "aws_ecs_task_definition":
                self._index_task_definition(change)
        self.expressions: dict[tuple[str, str], dict] = {}
        configuration = document.get("configuration") or {}
        if isinstance(configuration, dict):
            self._index_module(configuration.get("root_module") or {}, "")

    def _index_task_definition(self, change: dict) -> None:
        """Services name their task definition by ARN or family (on either side)."""
        for side in ("before", "after"):
            values = change["change"].get(side) or {}
            for key in ("arn", "family"):
                if isinstance(values.get(key), str):
                    self.task_definitions.setdefault((side, values[key]), change)

    def _index_module(self, module: dict, path: str) -> None:
        for resource in module.get("resources") or []:
            if isinstance(resource, dict) and resource.get("mode", "managed") == "managed":
                self.expressions[(path, resource.get("address", ""))] = (
                    resource.get("expressions") or {}
                )
        for name, call in (module.get("module_calls") or {}).items():
            prefix = f"{path}.module.{name}" if path else f"module.{name}"
            self._index_module((call or {}).get("module") or {}, prefix)

    def referenced(self, change: dict, attribute: str) -> dict | None:
        """The resource instance an attribute's configuration expression refers to."""
        module = change.get("module_address", "")
        local = f"{change['type']}.{change.get('name', '')}"
        expression = self.expressions.get((MODULE_KEY_RE.sub("", module), local), {})
        for reference in (expression.get(attribute) or {}).get("references", []):
            parts = reference.split(".")
            if len(parts) < 2 or parts[0] in ("var", "local", "module", "data", "each",
                                               "count", "path", "self", "terraform"):  # fmt: skip
                continue
            candidates = self.instances.get((module, f"{parts[0]}.{parts[1].split('[')[0]}"))
            if not candidates:
                continue
            if len(candidates) == 1:
                return candidates[0]
            same_index = [c for c in candidates if c.get("index") == change.get("index")]
            if len(same_index) == 1:
                return same_index[0]
        return None


def _check_change(position: int, change) -> None:
    where = f"resource_changes[{position}]"
    if not isinstance(change, dict) or not isinstance(change.get("address"), str):
        raise PlanError(f"{where}: expected an object with an address.")
    if not isinstance(change.get("type"), str):
        raise PlanError(f"{where} ({change['address']}): missing type.")
    for key in ("name", "mode", "module_address"):
        if key in change and not isinstance(change[key], str):
            raise PlanError(f"{where} ({change['address']}): {key} must be a string.")
    body = change.get("change")
    if not isinstance(body, dict) or not isinstance(body.get("actions"), list):
        raise PlanError(f"{where} ({change['address']}): missing change.actions.")
    if not all(isinstance(action, str) for action in body["actions"]):
        raise PlanError(f"{where} ({change['address']}): change.actions must be strings.")
    for side in ("before", "after"):
        if body.get(side) is not None and not isinstance(body[side], dict):
            raise PlanError(f"{where} ({change['address']}): change.{side} must be an object.")


def quantity(value, name: str) -> Decimal:
    """A plan value as a non-negative, finite amount; anything else (text,
    NaN, infinity, a negative size) is reported as not priced, never summed."""
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise NotPriced(f"{name} is not a number ({value!r})") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_QUANTITY:
        raise NotPriced(f"{name} is not a plausible amount ({value!r})")
    return amount


class _Side:
    """One side (before or after) of one resource change, as pricers read it."""

    def __init__(self, plan: _Plan, change: dict, side: str) -> None:
        self.plan, self.change, self.side = plan, change, side
        self.values: dict = change["change"][side]
        unknown = change["change"].get("after_unknown") if side == "after" else None
        self.unknown: dict = unknown if isinstance(unknown, dict) else {}

    def get(self, name: str, default=None):
        """A planned value; NotPriced if it is known only after apply."""
        if self.unknown.get(name) is True:
            raise NotPriced(f"{name} is known only after apply")
        value = self.values.get(name)
        return default if value is None else value

    def number(self, name: str, default: Decimal | None = None) -> Decimal:
        value = self.get(name)
        if value is None and default is not None:
            return default
        return quantity(value, name)

    def resolve(self, name: str) -> _Side | None:
        """The same side of the resource this attribute refers to in the configuration."""
        target = self.plan.referenced(self.change, name)
        if target is None or target["change"].get(self.side) is None:
            return None
        return _Side(self.plan, target, self.side)


# -- pricers: one per resource type; each returns the side's components --------


def hourly(name: str, price: Decimal, count: Decimal = Decimal(1)) -> Component:
    return Component(name, "hours", HOURS * count, price)


def _rds_instance(side: _Side, catalog: Catalog) -> list[Component]:
    engine = str(side.get("engine", ""))
    family = {"postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(engine)
    if family is None:
        raise NotPriced(f"RDS engine {engine or '(none)'} is not in the price catalog")
    instance_class = side.get("instance_class", "")
    multi_az = bool(side.get("multi_az", False))
    factor = catalog.multi_az_factor if multi_az else Decimal(1)
    deployment = "Multi-AZ" if multi_az else "Single-AZ"
    storage_type = side.get("storage_type", "gp2")
    price = catalog.price(f"rds/{family}/{instance_class}", f"RDS {family} {instance_class}")
    storage = catalog.price(f"rds/storage/{storage_type}", f"RDS {storage_type} storage")
    components = [
        hourly(f"Database instance ({engine}, {instance_class}, {deployment})", price * factor),
        Component(f"Storage ({storage_type}, {deployment})", "GB-months",
                  side.number("allocated_storage", Decimal(20)), storage * factor),
    ]  # fmt: skip
    if storage_type == "io1":
        iops = catalog.price("rds/iops/io1", "RDS provisioned IOPS")
        components.append(Component("Provisioned IOPS", "IOPS-months", side.number("iops"),
                                    iops * factor))  # fmt: skip
    return components


def _ecs_service(side: _Side, catalog: Catalog) -> list[Component]:
    launch_type = side.get("launch_type", "") or ""
    providers = {s.get("capacity_provider") for s in side.get("capacity_provider_strategy", [])}
    if "FARGATE_SPOT" in providers:
        raise NotPriced("Fargate Spot prices change with demand; the catalog has none")
    if launch_type in ("EC2", "EXTERNAL") or (providers and "FARGATE" not in providers):
        raise Free("no charge (its tasks run on EC2 capacity, priced with the instances)")
    if launch_type != "FARGATE" and "FARGATE" not in providers:
        raise NotPriced("no launch type or capacity provider in the plan (the cluster's decides)")
    task = _task_definition(side)
    count = side.number("desired_count", Decimal(0))
    cpu, memory = task.get("cpu"), task.get("memory")
    if not cpu or not memory:
        raise NotPriced("its task definition has no task-level cpu and memory")
    # Task-level cpu/memory in units (1024 = 1 vCPU) and MiB; ECS also accepts
    # "1 vCPU" / "2 GB", which are not priced rather than guessed.
    vcpu = quantity(cpu, "cpu") / 1024
    gigabytes = quantity(memory, "memory") / 1024
    return [
        Component(f"Fargate vCPU ({count} × {plain(vcpu)} vCPU)", "vCPU-hours",
                  HOURS * count * vcpu, catalog.price("fargate/vcpu-hour", "Fargate vCPU")),
        Component(f"Fargate memory ({count} × {plain(gigabytes)} GB)", "GB-hours",
                  HOURS * count * gigabytes, catalog.price("fargate/gb-hour", "Fargate memory")),
    ]  # fmt: skip


def _task_definition(side: _Side) -> _Side:
    """The service's task definition: by ARN or family among the plan's
    resources, else (unknown until apply) through the configuration reference."""
    try:
        wanted = side.get("task_definition", "")
    except NotPriced:
        wanted = None
    if wanted:
        family = wanted.rsplit("/", 1)[-1].split(":")[0]
        found = side.plan.task_definitions.get((side.side, wanted)) or (
            side.plan.task_definitions.get((side.side, family))
        )
        if found is not None and found["change"].get(side.side) is not None:
            return _Side(side.plan, found, side.side)
    resolved = side.resolve("task_definition")
    if resolved is None:
        raise NotPriced(f"its task definition {wanted or '(known after apply)'} is not in this "
                        "plan")  # fmt: skip
    return resolved


def _load_balancer(side: _Side, catalog: Catalog) -> list[Component]:
    kind = side.get("load_balancer_type", "application")
    if kind not in ("application", "network"):
        raise NotPriced(f"{kind} load balancers are not in the price catalog")
    unit, usage = ("LCU", "alb_lcu") if kind == "application" else ("NLCU", "nlb_nlcu")
    lcus = DEFAULT_USAGE[usage]
    return [
        hourly(f"{kind.capitalize()} load balancer", catalog.price(f"elb/{kind}/hour", kind)),
        Component(f"Capacity units ({unit})", f"{unit}-hours", HOURS * lcus,
                  catalog.price(f"elb/{kind}/{unit.lower()}-hour", f"{kind} {unit}"),
                  f"{lcus} {unit} on average (default usage)"),
    ]  # fmt: skip


def _nat_gateway(side: _Side, catalog: Catalog) -> list[Component]:
    processed = DEFAULT_USAGE["nat_gb_processed"]
    return [
        hourly("NAT gateway", catalog.price("vpc/nat-gateway/hour", "NAT gateway")),
        Component("Data processed", "GB", processed,
                  catalog.price("vpc/nat-gateway/gb-processed", "NAT data processing"),
                  f"{processed} GB a month (default usage)"),
    ]  # fmt: skip


def _elastic_ip(side: _Side, catalog: Catalog) -> list[Component]:
    return [hourly("Public IPv4 address", catalog.price("vpc/public-ipv4/hour", "public IPv4"))]


def _s3_bucket(side: _Side, catalog: Catalog) -> list[Component]:
    stored = DEFAULT_USAGE["s3_gb"]
    price = catalog.price("s3/standard/gb-month", "S3 Standard storage")
    return [Component("Standard storage", "GB-months", stored, price,
                      f"{stored} GB stored (default usage)")]  # fmt: skip


def _log_group(side: _Side, catalog: Catalog) -> list[Component]:
    ingested = DEFAULT_USAGE["log_gb_ingested"]
    # Kept logs pile up until retention drops them ("never expire" counted as a year).
    days = side.number("retention_in_days", Decimal(0)) or Decimal(365)
    stored = (ingested * min(days, Decimal(365)) / 30).quantize(CENT)
    return [
        Component("Log ingestion", "GB", ingested,
                  catalog.price("logs/ingestion/gb", "CloudWatch Logs ingestion"),
                  f"{ingested} GB ingested a month (default usage)"),
        Component(f"Log storage ({days} days retention)", "GB-months", stored,
                  catalog.price("logs/storage/gb-month", "CloudWatch Logs storage"),
                  f"{ingested} GB a month kept {days} days (default usage)"),
    ]  # fmt: skip


def _metric_alarm(side: _Side, catalog: Catalog) -> list[Component]:
    high = side.number("period", Decimal(60)) < 60
    key = "cloudwatch/alarm-high-resolution/month" if high else "cloudwatch/alarm/month"
    name = "High-resolution alarm" if high else "Standard alarm"
    return [Component(name, "alarm-months", Decimal(1), catalog.price(key, name))]


def _fixed(name: str, key: str) -> Callable[[_Side, Catalog], list[Component]]:
    def pricer(side: _Side, catalog: Catalog) -> list[Component]:
        return [Component(name, "months", Decimal(1), catalog.price(key, name))]

    return pricer


def _ec2_instance(side: _Side, catalog: Catalog) -> list[Component]:
    instance_type = side.get("instance_type", "")
    price = catalog.price(f"ec2/instance/{instance_type}", f"EC2 {instance_type}")
    components = [hourly(f"Instance (Linux, on-demand, {instance_type})", price)]
    roots = side.get("root_block_device", []) or [{}]
    root = roots[0] or {}
    size = root.get("volume_size")
    volume_type = root.get("volume_type") or "gp2"
    components.append(Component(
        f"Root volume ({volume_type})", "GB-months",
        quantity(size, "volume_size") if size else DEFAULT_USAGE["root_volume_gb"],
        catalog.price(f"ebs/{volume_type}/gb-month", f"EBS {volume_type}"),
        "" if size else f"{DEFAULT_USAGE['root_volume_gb']} GB (the plan gives no size)",
    ))  # fmt: skip
    return components


def _ebs_volume(side: _Side, catalog: Catalog) -> list[Component]:
    volume_type = side.get("type", "gp2")
    components = [
        Component(
            f"Storage ({volume_type})",
            "GB-months",
            side.number("size"),
            catalog.price(f"ebs/{volume_type}/gb-month", f"EBS {volume_type}"),
        )
    ]
    iops = side.number("iops", Decimal(0))
    if volume_type == "gp3" and iops > 3000:  # 3,000 IOPS and 125 MB/s are included
        components.append(
            Component(
                "Provisioned IOPS above 3000",
                "IOPS-months",
                iops - 3000,
                catalog.price("ebs/gp3/iops-month", "gp3 IOPS"),
            )
        )
    throughput = side.number("throughput", Decimal(0)) if volume_type == "gp3" else ZERO
    if throughput > 125:
        components.append(
            Component(
                "Throughput above 125 MB/s",
                "MBps-months",
                throughput - 125,
                catalog.price("ebs/gp3/mbps-month", "gp3 throughput"),
            )
        )
    if volume_type == "io1":
        components.append(
            Component(
                "Provisioned IOPS",
                "IOPS-months",
                iops,
                catalog.price("ebs/io1/iops-month", "io1 IOPS"),
            )
        )
    return components  # fmt: skip


def _cache_nodes(side: _Side, catalog: Catalog) -> list[Component]:
    node_type = side.get("node_type", "")
    if side.change["type"] == "aws_elasticache_cluster":
        nodes = side.number("num_cache_nodes", Decimal(1))
    elif side.get("num_node_groups"):
        groups = side.number("num_node_groups")
        nodes = groups * (side.number("replicas_per_node_group", Decimal(0)) + 1)
    else:
        nodes = side.number("num_cache_clusters", Decimal(1))
    price = catalog.price(f"elasticache/{node_type}", f"ElastiCache {node_type}")
    return [hourly(f"Cache nodes ({nodes} × {node_type})", price, nodes)]


def _ecr_repository(side: _Side, catalog: Catalog) -> list[Component]:
    stored = DEFAULT_USAGE["ecr_gb"]
    return [Component("Image storage", "GB-months", stored,
                      catalog.price("ecr/storage/gb-month", "ECR storage"),
                      f"{stored} GB of images (default usage)")]  # fmt: skip


def _eks_cluster(side: _Side, catalog: Catalog) -> list[Component]:
    return [hourly("EKS control plane", catalog.price("eks/cluster/hour", "EKS cluster"))]


PRICERS: dict[str, Callable[[_Side, Catalog], list[Component]]] = {
    "aws_db_instance": _rds_instance,
    "aws_ecs_service": _ecs_service,
    "aws_lb": _load_balancer,
    "aws_alb": _load_balancer,
    "aws_nat_gateway": _nat_gateway,
    "aws_eip": _elastic_ip,
    "aws_s3_bucket": _s3_bucket,
    "aws_cloudwatch_log_group": _log_group,
    "aws_cloudwatch_metric_alarm": _metric_alarm,
    "aws_cloudwatch_dashboard": _fixed("Dashboard", "cloudwatch/dashboard/month"),
    "aws_instance": _ec2_instance,
    "aws_ebs_volume": _ebs_volume,
    "aws_elasticache_cluster": _cache_nodes,
    "aws_elasticache_replication_group": _cache_nodes,
    "aws_ecr_repository": _ecr_repository,
    "aws_secretsmanager_secret": _fixed("Secret", "secretsmanager/secret/month"),
    "aws_kms_key": _fixed("Customer managed key", "kms/key/month"),
    "aws_route53_zone": _fixed("Hosted zone", "route53/hosted-zone/month"),
    "aws_eks_cluster": _eks_cluster,
}


# -- several plans, and how the approval page shows them ------------------------


def combine(costs: list[dict]) -> dict | None:
    """One deployment's estimate from its Terraform steps' `cost` entries
    (steps whose estimate failed are left out; None if none was priced)."""
    priced = [c for c in costs if c and "monthly_total_usd" in c]
    if not priced:
        return None
    total = sum((Decimal(c["monthly_total_usd"]) for c in priced), ZERO)
    previous = sum((Decimal(c["previous_monthly_usd"]) for c in priced), ZERO)
    return {
        **priced[0],
        "monthly_total_usd": str(total), "previous_monthly_usd": str(previous),
        "delta_usd": str(total - previous),
        "resources": [r for c in priced for r in c["resources"]],
        "not_priced": [n for c in priced for n in c["not_priced"]],
    }  # fmt: skip


def signed_usd(amount: Decimal) -> str:
    """+$32.85, -$4.10 or $0.00: the sign first, as approvers read a delta."""
    amount = Decimal(amount).quantize(CENT)
    if not amount:
        return "$0.00"
    return f"{'+' if amount > 0 else '-'}${abs(amount):,}"


def biggest_changes(resources: list[dict]) -> list[dict]:
    """Resources whose monthly cost the plan changes, biggest change first,
    each with its line: "+$32.85/month: aws_nat_gateway.main[1]"."""
    changed = []
    for resource in resources:
        delta = Decimal(resource["monthly_usd"]) - Decimal(resource["previous_monthly_usd"])
        if delta:
            line = f"{signed_usd(delta)}/month: {resource['address']}"
            changed.append({**resource, "delta": delta, "line": line})
    changed.sort(key=lambda r: (-abs(r["delta"]), r["address"]))
    return changed


def approval_summary(deployment, plan_outputs: list[dict]) -> dict | None:
    """What the approval page shows of a deployment's CostEstimate: totals,
    the biggest changes first, priced, free and not-priced resources, and why
    a Terraform step has no estimate. None when there is nothing to show.
    Join `cost_estimate` when loading the deployment, or reading it costs a query."""
    estimate = getattr(deployment, "cost_estimate", None)  # the reverse one-to-one may be absent
    errors = [o["cost"]["error"] for o in plan_outputs if (o.get("cost") or {}).get("error")]
    if estimate is None:
        return {"estimate": None, "errors": errors} if errors else None
    resources = estimate.resources
    free = [r for r in resources if r.get("note") and not Decimal(r["previous_monthly_usd"])]
    free_ids = {id(r) for r in free}
    priced = sorted((r for r in resources if id(r) not in free_ids),
                    key=lambda r: (-Decimal(r["monthly_usd"]), r["address"]))  # fmt: skip
    return {
        "estimate": estimate,
        "delta": signed_usd(estimate.delta_usd),
        "changes": biggest_changes(resources),
        "priced": priced,
        "free": free,
        "usage_assumed": any(c["usage_assumed"] for r in priced for c in r["components"]),
        "errors": errors,
    }
