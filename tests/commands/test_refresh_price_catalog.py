"""manage.py refresh_price_catalog

moto has no Pricing API and nothing else here can answer `GetProducts`, so
these tests put botocore's Stubber on a real `pricing` client: it checks
each request against the API model and the expected filters, and answers
with PriceList documents shaped like the real ones (JSON strings holding
product, terms.OnDemand and priceDimensions, free tier included).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from django.core.management import CommandError, call_command

from environments.management.commands import refresh_price_catalog as command


def price_item(usage_type: str, *tiers: tuple[str, str]) -> str:
    """One PriceList entry as the API returns it: a JSON document in a string."""
    dimensions = {
        f"SKU1.JRTCKXETXF.{n}": {"unit": "Hrs", "beginRange": begin, "endRange": "Inf",
                                 "description": usage_type, "pricePerUnit": {"USD": usd}}
        for n, (begin, usd) in enumerate(tiers)
    }  # fmt: skip
    return json.dumps({
        "product": {"productFamily": "Compute", "sku": "SKU1",
                    "attributes": {"usagetype": usage_type, "regionCode": "us-east-1"}},
        "serviceCode": "AmazonECS",
        "terms": {"OnDemand": {"SKU1.JRTCKXETXF": {
            "offerTermCode": "JRTCKXETXF", "sku": "SKU1",
            "effectiveDate": "2026-11-01T00:00:00Z", "priceDimensions": dimensions}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z",
    })  # fmt: skip


def request(code: str, filters: dict[str, str]) -> dict:
    return {
        "ServiceCode": code, "FormatVersion": "aws_v1", "MaxResults": 10,
        "Filters": [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in filters.items()],
    }  # fmt: skip


@pytest.fixture
def catalog_file(tmp_path) -> Path:
    path = tmp_path / "price_catalog.json"
    path.write_text(json.dumps({
        "source": "AWS Price List API, public on-demand prices", "retrieved_on": "2026-01-01",
        "version": "aws-on-demand-2026-01-01", "currency": "USD", "hours_per_month": 730,
        "regions": {"us-east-1": {"fargate/vcpu-hour": "0.04", "logs/ingestion/gb": "0.49",
                                  "rds/postgres/db.t3.small": "0.035"}},
    }))  # fmt: skip
    return path


@pytest.fixture
def pricing_client(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEPRICING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    client = boto3.client("pricing", region_name="us-east-1")
    with Stubber(client) as stubber:
        # Keys in sorted order: fargate, logs, rds.
        stubber.add_response(
            "get_products",
            {"FormatVersion": "aws_v1",
             "PriceList": [price_item("USE1-Fargate-vCPU-Hours:perCPU", ("0", "0.0404800000"))]},
            request("AmazonECS", {"regionCode": "us-east-1",
                                  "usagetype": "USE1-Fargate-vCPU-Hours:perCPU"}),
        )  # fmt: skip
        stubber.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [price_item(
                "USE1-DataProcessing-Bytes", ("5", "0.5000000000"), ("0", "0.0000000000"))]},
            request("AmazonCloudWatch", {"regionCode": "us-east-1",
                                         "usagetype": "USE1-DataProcessing-Bytes"}),
        )  # fmt: skip
        stubber.add_response(
            "get_products", {"FormatVersion": "aws_v1", "PriceList": []},
            request("AmazonRDS", {"regionCode": "us-east-1", "instanceType": "db.t3.small",
                                  "databaseEngine": "PostgreSQL", "deploymentOption": "Single-AZ"}),
        )  # fmt: skip
        monkeypatch.setattr(command, "pricing_client", lambda: client)
        yield stubber
        stubber.assert_no_pending_responses()


def test_it_rebuilds_the_catalog_from_the_price_list(catalog_file, pricing_client):
    out, err = io.StringIO(), io.StringIO()
    call_command("refresh_price_catalog", catalog=str(catalog_file), stdout=out, stderr=err)
    catalog = json.loads(catalog_file.read_text())
    assert catalog["regions"]["us-east-1"] == {
        "fargate/vcpu-hour": "0.04048",
        "logs/ingestion/gb": "0.5",  # the paid tier, not the free first 5 GB
        "rds/postgres/db.t3.small": "0.035",  # no product returned: the old price stays
    }
    assert catalog["source"] == "AWS Price List API, public on-demand prices"
    assert catalog["version"] == f"aws-on-demand-{catalog['retrieved_on']}"
    assert catalog["retrieved_on"] != "2026-01-01"
    assert "kept the old price (the API returned none): us-east-1 rds/postgres/db.t3.small" in (
        err.getvalue()
    )
    assert f"Wrote {catalog_file}: us-east-1" in out.getvalue()


def test_it_needs_credentials(catalog_file, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    before = catalog_file.read_text()
    with pytest.raises(CommandError, match="No AWS credentials"):
        call_command("refresh_price_catalog", catalog=str(catalog_file))
    assert catalog_file.read_text() == before


def test_it_calls_aws_where_the_other_clients_do(monkeypatch):
    """AWS_ENDPOINT_URL is passed to each client by AwsAccess; botocore's own
    reading of it can be switched off by the AWS config, AwsAccess's cannot."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5123")
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert command.pricing_client().meta.endpoint_url == "http://127.0.0.1:5123"
    assert command.pricing_client().meta.region_name == "us-east-1"


def test_it_knows_a_query_for_every_bundled_price():
    from environments.pricing import CATALOG_PATH

    catalog = json.loads(CATALOG_PATH.read_text())
    missing = [(region, key) for region, prices in catalog["regions"].items() for key in prices
               if command.product_query(key, region) is None]  # fmt: skip
    assert missing == []
    code, filters = command.product_query("vpc/nat-gateway/hour", "ca-central-1")
    assert (code, filters) == ("AmazonEC2", {"regionCode": "ca-central-1",
                                             "usagetype": "CAN1-NatGateway-Hours"})  # fmt: skip
