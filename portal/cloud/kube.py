"""Kubernetes through the official client, with bounded retries and timeouts.

The client has no timeout of its own (a request to an API server that
accepts the connection and never answers waits forever) and no retries. Every
client made here gets both: KUBE_CONNECT_TIMEOUT / KUBE_READ_TIMEOUT on each
request unless the call gives its own, and urllib3 retries with back-off for
refused connections, timeouts and 5xx answers (KUBE_RETRIES after the first
try). Reads and the runners' patches (setting images, restoring a template:
applying one twice changes nothing) are retried; POST, which creates, is not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kubernetes import client, config
from urllib3.util.retry import Retry

KUBE_CONNECT_TIMEOUT = 5
KUBE_READ_TIMEOUT = 10
KUBE_RETRIES = 2
RETRIED_STATUSES = (500, 502, 503, 504)


def bounded_retries() -> Retry:
    return Retry(
        total=KUBE_RETRIES,
        connect=KUBE_RETRIES,
        read=KUBE_RETRIES,
        status=KUBE_RETRIES,
        backoff_factor=0.5,
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "PATCH", "PUT", "DELETE"}),
        # The last 5xx is returned, not raised: the client turns it into an
        # ApiException with the server's own status and reason.
        raise_on_status=False,
    )


class BoundedApiClient(client.ApiClient):
    """An ApiClient whose every request has a connect and a read timeout."""

    def call_api(self, *args, _request_timeout=None, **kwargs):
        timeout = _request_timeout or (KUBE_CONNECT_TIMEOUT, KUBE_READ_TIMEOUT)
        return super().call_api(*args, _request_timeout=timeout, **kwargs)


@dataclass
class KubeAccess:
    """Builds a `kubernetes` ApiClient: from a kubeconfig context in production,
    or for a given API URL. `KUBE_API_URL` (the sandbox's fake API server) wins
    over the context, as `AWS_ENDPOINT_URL` wins over AWS's own endpoints."""

    context: str = ""
    host: str | None = field(default_factory=lambda: os.environ.get("KUBE_API_URL"))

    def __call__(self) -> client.ApiClient:
        configuration = client.Configuration()
        if self.host:
            configuration.host = self.host
        else:
            config.load_kube_config(
                context=self.context or None, client_configuration=configuration
            )
        configuration.retries = bounded_retries()
        return BoundedApiClient(configuration)
