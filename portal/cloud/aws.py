"""AWS through boto3: one session per environment (optionally an assumed
role), clients at the sandbox's endpoint when one is set, and AWS errors
turned into messages naming what was being done."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from portal.cloud.errors import CloudError

DEFAULT_REGION = "ca-central-1"


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
        sts = base.client("sts", endpoint_url=self.endpoint_url or None)
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
        """A client of the session, at the sandbox's endpoint when one is set;
        `options` go to boto3 (e.g. `config=` with timeouts)."""
        return self._session.client(service, endpoint_url=self.endpoint_url or None, **options)


def aws_call(what: str, method, **kwargs):
    """Call AWS; turn its errors into a CloudError naming what we were doing."""
    try:
        return method(**kwargs)
    except ClientError as error:
        detail = error.response.get("Error", {})
        raise CloudError(
            f"{what} failed: {detail.get('Code', 'error')}: {detail.get('Message', error)}"
        ) from None
    except BotoCoreError as error:
        raise CloudError(f"{what} failed: {error}") from None
