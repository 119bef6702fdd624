"""The promotion rule: a release may come to an environment only after a
forward deployment of it succeeded in the previous one, and was not rolled
away from since. Takes the deployments to look in, so it needs no import of
the Deployment model."""

from __future__ import annotations

from deployments.choices import Kind, Status
from portal.core.roles import PolicyError


def promotion_source(deployments, release, environment):
    """The previous environment's run that lets `release` come here: a forward
    deployment that succeeded there and was not rolled away from since. None
    without a previous environment; PolicyError saying why when there is none."""
    previous = environment.previous()
    if previous is None:
        return None
    runs = deployments.filter(
        release=release, environment=previous, kind=Kind.DEPLOY, status=Status.SUCCEEDED
    ).latest_first()
    source = runs.filter(rolled_back_at__isnull=True).first()
    if source is not None:
        return source
    if runs.exists():
        raise PolicyError(
            f"{release.version} was rolled back from {previous.slug}; deploy it there again "
            f"and let it succeed before it may go to {environment.slug}.",
            field="release",
        )
    raise PolicyError(
        f"{release.version} must first succeed in {previous.slug} "
        f"before it may go to {environment.slug}.",
        field="release",
    )
