"""Rebuild the price catalog (environments/price_catalog.json) from the AWS
Price List API: `manage.py refresh_price_catalog [--region R ...] [--catalog PATH]`.

Refreshes exactly the prices the catalog holds (its keys, for its regions or
the ones named), so pricing.py and the file never disagree about what exists.
A price the API does not return is kept and reported, never dropped: a
missing key would turn a priced resource into a not-priced one silently.
Needs AWS credentials (any principal allowed `pricing:GetProducts`); without
them the bundled catalog stays as it is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import boto3
from django.core.management.base import BaseCommand, CommandError

from environments.pricing import CATALOG_PATH
from portal.cloud.aws import AwsAccess

# Usage types carry a region prefix; EC2's own (instances, EBS, NAT) have none in us-east-1.
USAGE_PREFIX = {"us-east-1": "USE1-", "ca-central-1": "CAN1-"}
ENGINES = {"postgres": "PostgreSQL", "mysql": "MySQL"}
RDS_VOLUMES = {"gp2": "General Purpose", "gp3": "General Purpose-GP3",
               "io1": "Provisioned IOPS", "standard": "Magnetic"}  # fmt: skip
# Catalog key → (service code, filters); `{p}` is the usage type prefix, `{e}` EC2's.
FIXED = {
    "fargate/vcpu-hour": ("AmazonECS", {"usagetype": "{p}Fargate-vCPU-Hours:perCPU"}),
    "fargate/gb-hour": ("AmazonECS", {"usagetype": "{p}Fargate-GB-Hours"}),
    "elb/application/hour": ("AWSELB", {"usagetype": "{p}LoadBalancerUsage",
                                        "productFamily": "Load Balancer-Application"}),
    "elb/application/lcu-hour": ("AWSELB", {"usagetype": "{p}LCUUsage",
                                            "productFamily": "Load Balancer-Application"}),
    "elb/network/hour": ("AWSELB", {"usagetype": "{p}LoadBalancerUsage",
                                    "productFamily": "Load Balancer-Network"}),
    "elb/network/nlcu-hour": ("AWSELB", {"usagetype": "{p}LCUUsage",
                                         "productFamily": "Load Balancer-Network"}),
    "vpc/nat-gateway/hour": ("AmazonEC2", {"usagetype": "{e}NatGateway-Hours"}),
    "vpc/nat-gateway/gb-processed": ("AmazonEC2", {"usagetype": "{e}NatGateway-Bytes"}),
    "vpc/public-ipv4/hour": ("AmazonVPC", {"usagetype": "{p}PublicIPv4:InUseAddress"}),
    "s3/standard/gb-month": ("AmazonS3", {"usagetype": "{p}TimedStorage-ByteHrs"}),
    "logs/ingestion/gb": ("AmazonCloudWatch", {"usagetype": "{p}DataProcessing-Bytes"}),
    "logs/storage/gb-month": ("AmazonCloudWatch", {"usagetype": "{p}TimedStorage-ByteHrs"}),
    "cloudwatch/alarm/month": ("AmazonCloudWatch", {"usagetype": "{p}CW:AlarmMonitorUsage"}),
    "cloudwatch/alarm-high-resolution/month": (
        "AmazonCloudWatch", {"usagetype": "{p}CW:HighResAlarmMonitorUsage"}),
    "cloudwatch/dashboard/month": ("AmazonCloudWatch", {"usagetype": "DashboardsUsageHour"}),
    "ebs/gp3/iops-month": ("AmazonEC2", {"usagetype": "{e}EBS:VolumeP-IOPS.gp3"}),
    "ebs/gp3/mbps-month": ("AmazonEC2", {"usagetype": "{e}EBS:VolumeP-Throughput.gp3"}),
    "ebs/io1/iops-month": ("AmazonEC2", {"usagetype": "{e}EBS:VolumeP-IOPS.piops"}),
    "ecr/storage/gb-month": ("AmazonECR", {"usagetype": "{p}TimedStorage-ByteHrs"}),
    "secretsmanager/secret/month": ("AWSSecretsManager",
                                    {"usagetype": "{p}AWSSecretsManager-Secrets"}),
    "kms/key/month": ("awskms", {"usagetype": "{p}KMS-Keys"}),
    "route53/hosted-zone/month": ("AmazonRoute53", {"usagetype": "HostedZone"}),
    "eks/cluster/hour": ("AmazonEKS", {"usagetype": "{p}AmazonEKS-Hours:perCluster"}),
}  # fmt: skip


def product_query(key: str, region: str) -> tuple[str, dict[str, str]] | None:
    """The Price List query for one catalog key in one region (None: unknown key)."""
    group, _, rest = key.partition("/")
    found: tuple[str, dict[str, str]] | None = None
    if key in FIXED:
        code, filters = FIXED[key]
        prefix = USAGE_PREFIX.get(region, "")
        ec2_prefix = "" if region == "us-east-1" else prefix
        found = code, {k: v.format(p=prefix, e=ec2_prefix) for k, v in filters.items()}
    elif group == "rds" and rest.split("/")[0] in ENGINES:
        engine, instance_class = rest.split("/", 1)
        found = "AmazonRDS", {"instanceType": instance_class, "databaseEngine": ENGINES[engine],
                              "deploymentOption": "Single-AZ"}  # fmt: skip
    elif group == "rds" and rest.startswith("storage/"):
        volume = RDS_VOLUMES.get(rest.removeprefix("storage/"), "")
        found = (
            "AmazonRDS",
            {
                "productFamily": "Database Storage",
                "volumeType": volume,
                "deploymentOption": "Single-AZ",
                "databaseEngine": "PostgreSQL",
            },
        )
    elif key == "rds/iops/io1":
        found = "AmazonRDS", {"productFamily": "Provisioned IOPS", "deploymentOption": "Single-AZ",
                              "databaseEngine": "PostgreSQL"}  # fmt: skip
    elif group == "ec2":
        found = "AmazonEC2", {"instanceType": rest.removeprefix("instance/"),
                              "operatingSystem": "Linux", "tenancy": "Shared",
                              "preInstalledSw": "NA", "capacitystatus": "Used"}  # fmt: skip
    elif group == "ebs" and rest.endswith("/gb-month"):
        found = "AmazonEC2", {"productFamily": "Storage",
                              "volumeApiName": rest.removesuffix("/gb-month")}  # fmt: skip
    elif group == "elasticache":
        found = "AmazonElastiCache", {"instanceType": rest, "cacheEngine": "Redis"}
    if found is None:
        return None
    code, filters = found
    if key == "route53/hosted-zone/month":  # a global price: no region attribute
        return code, filters
    return code, {"regionCode": region, **filters}


def on_demand_price(price_list: list[str]) -> Decimal | None:
    """The first tier's on-demand USD price of the first product (free tiers skipped)."""
    for item in price_list:
        product = json.loads(item)
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            dimensions = sorted(
                term.get("priceDimensions", {}).values(),
                key=lambda d: Decimal(d.get("beginRange") or 0),
            )
            for dimension in dimensions:
                usd = Decimal(dimension.get("pricePerUnit", {}).get("USD", "0"))
                if usd > 0:
                    return usd
    return None


def refresh_catalog(client, catalog: dict, regions: list[str]) -> tuple[dict, list[str]]:
    """New catalog contents and the keys kept because the API had no price."""
    kept: list[str] = []
    for region in regions:
        prices = catalog["regions"].setdefault(region, {})
        keys = sorted(set(prices) | {k for p in catalog["regions"].values() for k in p})
        for key in keys:
            query = product_query(key, region)
            price = None
            if query is not None:
                code, filters = query
                response = client.get_products(
                    ServiceCode=code, FormatVersion="aws_v1", MaxResults=10,
                    Filters=[{"Type": "TERM_MATCH", "Field": f, "Value": v}
                             for f, v in filters.items()],
                )  # fmt: skip
                price = on_demand_price(response.get("PriceList", []))
            if price is None:
                kept.append(f"{region} {key}")
                continue
            prices[key] = format(price.normalize(), "f")
    today = datetime.now(UTC).date().isoformat()
    catalog.update(retrieved_on=today, version=f"aws-on-demand-{today}")
    return catalog, kept


def pricing_client():
    """A Price List client built like every other AWS client here (AwsAccess:
    AWS_ENDPOINT_URL, the sandbox's endpoint, included)."""
    # The Price List API answers in a few regions only; us-east-1 serves every region's prices.
    return AwsAccess(region="us-east-1", session_name="gantry-pricing").client("pricing")


class Command(BaseCommand):
    help = "Rebuild the bundled price catalog from the AWS Price List API."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--region",
            action="append",
            default=[],
            help="Region to refresh (repeatable); default: the catalog's.",
        )
        parser.add_argument("--catalog", default=str(CATALOG_PATH), help="File to rebuild.")

    def handle(self, *args, **options) -> None:
        if boto3.Session().get_credentials() is None:
            raise CommandError(
                "No AWS credentials: the Price List API needs them (pricing:GetProducts). "
                "The bundled catalog is unchanged."
            )
        path = Path(options["catalog"])
        catalog = json.loads(path.read_text())
        regions = options["region"] or sorted(catalog["regions"])
        catalog, kept = refresh_catalog(pricing_client(), catalog, regions)
        path.write_text(json.dumps(catalog, indent=2) + "\n")
        for entry in kept:
            self.stderr.write(f"kept the old price (the API returned none): {entry}")
        self.stdout.write(f"Wrote {path}: {', '.join(regions)}, catalog {catalog['version']}.")
