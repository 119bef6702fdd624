"""Catalog pages of environments' own: freeze windows shown on any page, and
break-glass overrides of freezes (requested by an admin, agreed by a second
person).

Users only ever see environments they hold a role in; any other environment
is a 404, so its existence is not revealed. The pages that show what runs
where compose the catalog with deployments one level up (portal/catalog_views.py).
"""

from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from environments.choices import TIER_COLOURS, WEEKDAYS
from environments.forms import BreakGlassForm, OverrideDecisionForm
from environments.models import Environment, FreezeOverride, freeze_windows_of
from portal.core.choices import Role
from portal.core.prepared import PreparedQuery, prepared
from portal.core.roles import PolicyError, has_role, visible_environments

PAGE_SIZE = 25
DAY_NAMES = dict(WEEKDAYS)


# -- helpers shared with the other pages -----------------------------------------


def paginate(request: HttpRequest, queryset, per_page: int = PAGE_SIZE) -> Page:
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def decorate_environment(env: Environment, now=None) -> Environment:
    """Attach what the templates show about an environment's state: tier colour, freeze."""
    freeze_windows_of.prefetch(env, "freeze_windows")  # a no-op when the caller read them
    env.tier_colour = TIER_COLOURS.get(env.tier, "grey")
    env.freeze = env.active_freeze(now or timezone.now())
    env.windows = list(env.freeze_windows.all())
    for window in env.windows:
        window.start_day = DAY_NAMES.get(window.start_weekday, "")
        window.end_day = DAY_NAMES.get(window.end_weekday, "")
    return env


def visible_environment(
    request: HttpRequest,
    slug: str,
    env_slug: str,
    environments: QuerySet | None = None,
    related: tuple[str, ...] = (),
) -> Environment:
    """The environment by its slugs if the user may see it, else a 404; read
    from `environments` when given (e.g. annotated by the caller), with the
    relations `related` names joined."""
    if environments is None:
        env = _environment_row(related).first(slug=slug, env_slug=env_slug)
        if env is None:
            raise Http404("No Environment matches the given query.")
        # Prepared too: a prefetch in the row's query would be compiled every time.
        freeze_windows_of.prefetch(env, "freeze_windows")
    else:
        environments = _with_page_relations(environments.select_related(*related))
        env = get_object_or_404(environments.prefetch_related("freeze_windows"),
                                application__slug=slug, slug=env_slug)  # fmt: skip
    # Seeing an environment is holding a role there: the same has_role the
    # page asks anyway (one query, or none for a superuser), after a read by
    # the slugs alone, rather than a DISTINCT join over the memberships.
    if not has_role(request.user, env, Role.VIEWER):
        raise Http404("No Environment matches the given query.")
    return env


def _with_page_relations(environments: QuerySet) -> QuerySet:
    """What every environment page reads with the environment, joined (and
    its freeze windows, read after it)."""
    return environments.select_related(
        "application", "approver_group", "second_approver_group", "cost_approval_group"
    )


@functools.cache
def _environment_row(related: tuple[str, ...]) -> PreparedQuery:
    @prepared(slug=str, env_slug=str)
    def environment_row(slug: str, env_slug: str) -> QuerySet:
        # Prepared (portal/core/prepared.py): every environment page reads it.
        environments = Environment.objects.select_related(*related)
        return _with_page_relations(environments).filter(application__slug=slug, slug=env_slug)

    return environment_row


# -- break-glass -----------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def freeze_override_new(request: HttpRequest, slug: str, env_slug: str) -> HttpResponse:
    """Break glass: an admin asks to lift the freeze, with a typed reason and a duration."""
    env = visible_environment(request, slug, env_slug)
    if not has_role(request.user, env, Role.ADMIN):
        raise PermissionDenied(f"Only admins of {env} may break the glass.")
    form = BreakGlassForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            FreezeOverride.request(env, request.user, form.cleaned_data["reason"], form.duration())
        except PolicyError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(
                request, "Break-glass requested. Another approver or admin must approve it."
            )
            return redirect("environment-detail", slug=slug, env_slug=env_slug)
    decorate_environment(env)
    status = 400 if form.errors else 200
    context = {"application": env.application, "environment": env, "form": form}
    return render(request, "environments/freeze_override_form.html", context, status=status)


@login_required
@require_POST
def freeze_override_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """The second person approves or rejects a pending break-glass request."""
    override = get_object_or_404(
        FreezeOverride.objects.select_related("environment__application"),
        pk=pk,
        environment__in=visible_environments(request.user),
    )
    env = override.environment
    back = redirect("environment-detail", slug=env.application.slug, env_slug=env.slug)
    if not has_role(request.user, env, Role.APPROVER, Role.ADMIN):
        raise PermissionDenied(f"Only approvers or admins of {env} may decide on break-glass.")
    form = OverrideDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose approve or reject.")
        return back
    decision = form.cleaned_data["decision"]
    try:
        if decision == "approve":
            override.approve(request.user)
        else:
            override.reject(request.user)
    except PolicyError as exc:
        messages.error(request, exc.message)
    else:
        if decision == "approve":
            until = f"{override.expires_at:%Y-%m-%d %H:%M %Z}"
            messages.success(request, f"Break-glass approved: the freeze is lifted until {until}.")
        else:
            messages.success(request, "Break-glass request rejected.")
    return back
