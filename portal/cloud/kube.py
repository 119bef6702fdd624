"""Kubernetes through the official client."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kubernetes import client, config


@dataclass
class KubeAccess:
    """Builds a `kubernetes` ApiClient: from a kubeconfig context in production,
    or for a given API URL. `KUBE_API_URL` (the sandbox's fake API server) wins
    over the context, as `AWS_ENDPOINT_URL` wins over AWS's own endpoints."""

    context: str = ""
    host: str | None = field(default_factory=lambda: os.environ.get("KUBE_API_URL"))

    def __call__(self) -> client.ApiClient:
        if self.host:
            return client.ApiClient(client.Configuration(host=self.host))
        return config.new_client_from_config(context=self.context or None)
