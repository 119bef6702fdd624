"""AWS through boto3: one session per environment (optionally an assumed
role), clients at the sandbox's endpoint when one is set, and AWS errors
turned into messages naming what was being done.

Every client retries and times out within bounds (BOUNDED): botocore's
"standard" retry mode (exponential back-off with jitter on throttling, 5xx
answers and connection errors), AWS_MAX_ATTEMPTS attempts in all, and a
connect and a read timeout. An unreachable endpoint fails a step in seconds,
naming the endpoint, instead of holding it until the step's own timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from portal.cloud.errors import CloudError

DEFAULT_REGION = "ca-central-1"
AWS_MAX_ATTEMPTS = 4  # the first call and three retries
AWS_CONNECT_TIMEOUT = 5
# Long enough for a slow describe/list page; the waits for a service to become
# stable are polls of short calls, never one long one.
AWS_READ_TIMEOUT = 20
BOUNDED = Config(
    retries={"mode": "standard", "max_attempts": AWS_MAX_ATTEMPTS},
    connect_timeout=AWS_CONNECT_TIMEOUT,
    read_timeout=AWS_READ_TIMEOUT,
)
UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


@dataclass
class AwsAccess:
    """Builds boto3 sessions and clients for one environment.

    Honours `AWS_ENDPOINT_URL` (the sandbox's moto server) and, when a role is
    given, assumes it once so all clients share the credentials. Calling the
    object returns the session.
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
        sts = base.client("sts", endpoint_url=self.endpoint_url or None, config=BOUNDED)
        try:
            answer = sts.assume_role(RoleArn=self.role_arn, RoleSessionName=self.session_name)
        except ClientError as error:  # refused: AccessDenied, a malformed ARN, ...
            detail = error.response.get("Error", {})
            reason = f"{detail.get('Code', 'error')}: {detail.get('Message', error)}"
            raise CloudError(f"Assuming role {self.role_arn} failed: {reason}") from None
        except BotoCoreError as error:  # no credentials, endpoint unreachable, bad parameter
            raise CloudError(f"Assuming role {self.role_arn} failed: {error}") from None
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
        """A client of the session, at the sandbox's endpoint when one is set,
        with BOUNDED retries and timeouts; `options` go to boto3 (a `config=`
        is merged over BOUNDED, e.g. shorter timeouts)."""
        config = BOUNDED.merge(options.pop("config")) if "config" in options else BOUNDED
        return self._session.client(
            service, endpoint_url=self.endpoint_url or None, config=config, **options
        )


def aws_call(what: str, method, **kwargs):
    """Call AWS; turn its errors into a CloudError naming what we were doing."""
    try:
        return method(**kwargs)
    except ClientError as error:
        detail = error.response.get("Error", {})
        raise CloudError(
            f"{what} failed: {detail.get('Code', 'error')}: {detail.get('Message', error)}"
        ) from None
    except UNREACHABLE as error:  # its message names the endpoint
        raise CloudError(
            f"{what} failed: {error} (AWS unreachable; gave up after {AWS_MAX_ATTEMPTS} "
            "attempts). Check the endpoint and the network, then retry."
        ) from None
    except BotoCoreError as error:
        raise CloudError(f"{what} failed: {error}") from None
