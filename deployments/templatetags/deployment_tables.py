"""The rows of the deployments' tables: `{{ deployments|deployment_rows:show_environment }}`
(templates/deployments/_deployment_table.html) and `{{ releases|release_rows }}`
(the release list).

Built here rather than in the template: the deployment list, the environment
page, a release's page and the release list each print 25 rows, and the
template engine took ~0.3 ms a row for its six or seven cells (a URL
reversed, displays, a user, a time), about half of those pages' server
time. Each value is escaped exactly as the template escaped it (Django's
`escape` is `html.escape`, `truncatechars` is `Truncator.chars`), and the
markup is the template's, value for value (tests/deployments/test_deployment_table.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from django import template
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from portal.core.templatetags.local_time import local

register = template.Library()

AUTOMATIC = "Gantry (automatic)"  # who requested a deployment Gantry started itself


@register.filter
def deployment_rows(deployments: Iterable, show_environment: bool = False) -> SafeString:
    """One <tr> per deployment: number, release, environment (when the table
    spans several), kind, status, requester, when it was requested."""
    return mark_safe("".join(_row(d, bool(show_environment)) for d in deployments))  # noqa: S308


def _row(deployment, show_environment: bool) -> str:
    env = deployment.environment if show_environment else None
    requester = deployment.requested_by.get_username() if deployment.requested_by_id else ""
    url = reverse("deployment-detail", args=[deployment.pk])
    return (
        f'<tr><td><a href="{escape(url)}">#{deployment.pk}</a></td>'
        + (f"<td>{escape(env.application.slug)} " if env else "<td>")
        + f"<strong>{escape(deployment.release.version)}</strong></td>"
        + (f"<td>{escape(env.name)}</td>" if env else "")
        + f"<td>{escape(deployment.get_kind_display())}</td>"
        f'<td><span class="badge badge-{escape(getattr(deployment, "status_colour", ""))}">'
        f"{escape(deployment.get_status_display())}</span></td>"
        f"<td>{escape(requester or AUTOMATIC)}</td>"
        f'<td>{escape(local(deployment.created_at, "%Y-%m-%d %H:%M"))}</td></tr>'
    )  # fmt: skip


@register.filter
def release_rows(releases: Iterable) -> SafeString:
    """One <tr> per release: version, commit, its services, notes, who registered it, when.
    The releases come with their artifacts and services (artifacts_with_services)."""
    return mark_safe("".join(_release_row(r) for r in releases))  # noqa: S308


def _release_row(release) -> str:
    services = ", ".join(a.service.slug for a in release.artifacts.all())
    registrar = release.created_by.get_username() if release.created_by_id else ""
    url = reverse("release-detail", args=[release.pk])
    return (
        f'<tr><td><a href="{escape(url)}"><strong>{escape(release.version)}</strong></a></td>'
        + (f"<td><code>{escape(Truncator(release.commit).chars(11))}</code></td>"
           if release.commit else "<td></td>")
        + f"<td><small>{escape(services)}</small></td>"
        f"<td>{escape(Truncator(release.notes).chars(80))}</td>"
        f"<td>{escape(registrar)}</td>"
        f'<td>{escape(local(release.created_at, "%Y-%m-%d %H:%M"))}</td></tr>'
    )  # fmt: skip
