"""The catalog as people browse it: applications, their environments, what
runs where, the rollback page and the cost page. These pages compose the
catalog (environments) with what deployments ran there, so they sit in the
shell, above both apps.

Users only ever see environments they hold a role in; any other environment
is a 404, so its existence is not revealed.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from deployments import drift, rollback
from deployments.forms import RollbackForm
from deployments.models import (
    Deployment,
    Release,
    artifacts_with_services,
    current_estimates,
    load_artifacts,
    with_current_deployment,
)
from deployments.rollback import succeeded_releases
from deployments.views import decorate_deployments, rollback_plan
from environments.alarms import alarm_panel
from environments.choices import OVERRIDE_COLOURS, OverrideStatus
from environments.costs import cost_report
from environments.forms import BreakGlassForm
from environments.models import Environment, FreezeOverride
from environments.views import decorate_environment, paginate
from environments.views import visible_environment as environment_page
from portal.core.choices import Role
from portal.core.prepared import prepared
from portal.core.roles import (
    Forbidden,
    PolicyError,
    Unavailable,
    has_role,
    prime_roles,
    visible_applications,
    visible_environments,
)


def attach_current_releases(environments: list[Environment]) -> None:
    """Set `current_deployment` and `current_release` on environments annotated by
    `with_current_deployment`; three queries however many environments."""
    ids = [e.current_deployment_id for e in environments if e.current_deployment_id]
    deployments = {
        d.pk: d
        for d in Deployment.objects.filter(pk__in=ids)
        .select_related("release")
        .prefetch_related(artifacts_with_services("release__artifacts"))
    }
    for env in environments:
        env.current_deployment = deployments.get(env.current_deployment_id)
        env.current_release = env.current_deployment.release if env.current_deployment else None


def visible_environment(request: HttpRequest, slug: str, env_slug: str) -> Environment:
    """The environment, annotated with what runs there now, or a 404."""
    return environment_page(
        request, slug, env_slug, with_current_deployment(Environment.objects.all())
    )


# -- pages -----------------------------------------------------------------------


@login_required
@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """The catalog: every application the user may see, environments in promotion order."""
    environments = (
        visible_environments(request.user).order_by("order").prefetch_related("freeze_windows")
    )
    applications = list(
        visible_applications(request.user).prefetch_related(
            "services", Prefetch("environments", queryset=environments, to_attr="visible_envs")
        )
    )
    now = timezone.now()
    for application in applications:
        for env in application.visible_envs:
            decorate_environment(env, now)
    return render(request, "environments/home.html", {"applications": applications})


@login_required
@require_safe
def application_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """Services × environments: what runs where, and each environment's rules."""
    application = get_object_or_404(visible_applications(request.user), slug=slug)
    environments = list(
        with_current_deployment(visible_environments(request.user).filter(application=application))
        .select_related("approver_group", "second_approver_group", "cost_approval_group")
        .prefetch_related("freeze_windows")
        .order_by("order")
    )
    attach_current_releases(environments)
    now = timezone.now()
    for env in environments:
        decorate_environment(env, now)
    services = list(application.services.all())
    running = []  # one row per service: (service, [(environment, artifact or None)])
    for service in services:
        cells = []
        for env in environments:
            artifact = None
            if env.current_release is not None:
                artifact = next(
                    (a for a in env.current_release.artifacts.all() if a.service_id == service.pk),
                    None,
                )
            cells.append((env, artifact))
        running.append((service, cells))
    prime_roles(request.user, [e.pk for e in environments])
    can_register = any(has_role(request.user, e, Role.DEPLOYER) for e in environments)
    context = {
        "application": application,
        "environments": environments,
        "services": services,
        "running": running,
        "can_register": can_register,
    }
    return render(request, "environments/application_detail.html", context)


@prepared(environment_id=int)
def _newest_overrides(environment_id: int) -> QuerySet:
    """The environment's ten newest break-glass overrides (compiled once: the
    environment page reads them on every request)."""
    return FreezeOverride.objects.filter(environment_id=environment_id).select_related(
        "requested_by", "decided_by"
    )[:10]


@login_required
@require_safe
def environment_detail(request: HttpRequest, slug: str, env_slug: str) -> HttpResponse:
    """Rules, freezes, break-glass overrides, what runs now, and recent deployments."""
    # The drift panel's row (one per environment, or none) comes with the environment.
    env = environment_page(request, slug, env_slug, related=("drift",))
    # What runs now is the newest success here, the first of the releases that
    # succeeded here (deployments/rollback.py): read with them, not apart.
    succeeded = succeeded_releases(env)
    current = succeeded[0].deployment if succeeded else None
    env.current_deployment = current
    env.current_release = current.release if current else None
    if current is not None:
        load_artifacts(current.release)
    decorate_environment(env)
    user = request.user
    overrides = _newest_overrides.of(env)
    can_decide_overrides = has_role(user, env, Role.APPROVER, Role.ADMIN)
    for override in overrides:
        override.status_colour = OVERRIDE_COLOURS.get(override.status, "grey")
        override.user_may_decide = (
            override.status == OverrideStatus.PENDING
            and can_decide_overrides
            and override.requested_by_id != user.pk
        )
    deployments = paginate(
        request, env.deployments.select_related("release", "requested_by").order_by("-created_at")
    )
    decorate_deployments(deployments)
    plan = rollback_plan(env, current=current, succeeded=succeeded)
    context = {
        "application": env.application,
        "environment": env,
        "previous": env.previous() if env.require_previous_success else None,
        "active_override": next((o for o in overrides if o.is_active), None),
        "overrides": overrides,
        "page_obj": deployments,
        "is_admin": has_role(user, env, Role.ADMIN),
        "can_deploy": has_role(user, env, Role.DEPLOYER),
        "can_roll_back": has_role(user, env, Role.DEPLOYER) and plan.target is not None,
        "rollback_plan": plan,
        "succeeded_releases": succeeded,
        "break_glass_form": BreakGlassForm(),
        "drift": getattr(env, "drift", None),  # None: never checked
        **alarm_panel(env),
    }
    return render(request, "environments/environment_detail.html", context)


@login_required
@require_POST
def environment_drift_check(request: HttpRequest, slug: str, env_slug: str) -> HttpResponse:
    """A deployer asks for a drift check now; the panel shows the result when it is in."""
    env = visible_environment(request, slug, env_slug)
    try:
        drift.request_check(env, request.user)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except Unavailable as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Drift check queued: reload in a few seconds for the result.")
    return redirect("environment-detail", slug=slug, env_slug=env_slug)


@login_required
@require_http_methods(["GET", "POST"])
def environment_rollback(request: HttpRequest, slug: str, env_slug: str) -> HttpResponse:
    """Confirm a rollback: show what comes back and what runs now, ask for a
    reason. `?release=<id>` (a hidden field on POST) chooses the target;
    without it, the default target (deployments/rollback.py)."""
    env = visible_environment(request, slug, env_slug)
    if not has_role(request.user, env, Role.DEPLOYER):
        raise PermissionDenied(f"You need the deployer role in {env} to roll back.")
    chosen = _chosen_release(env, request.POST.get("release") or request.GET.get("release"))
    plan = rollback_plan(env, chosen)
    form = RollbackForm(request.POST or None)
    unavailable = False
    if request.method == "POST" and form.is_valid():
        try:
            deployment = rollback.request_rollback(
                env, request.user, form.cleaned_data["reason"], release=chosen
            )
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None
        except PolicyError as exc:
            unavailable = isinstance(exc, Unavailable)  # the job queue is down: 503
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Rollback #{deployment.pk} requested.")
            return redirect("deployment-detail", pk=deployment.pk)
    if plan.target is not None:
        load_artifacts(plan.target)
    decorate_environment(env)
    context = {
        "application": env.application,
        "environment": env,
        "plan": plan,
        "changes": rollback_changes(plan),
        "chosen": chosen,
        "form": form,
        "required_approvals": env.rollback_required_approvals,
    }
    status = 503 if unavailable else 400 if form.errors or plan.target is None else 200
    return render(request, "environments/rollback_form.html", context, status=status)


def _chosen_release(env: Environment, raw: str | None) -> Release | None:
    """The release named by `release=<id>`: one of the environment's application, or 404."""
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise Http404("No such release.")
    return get_object_or_404(Release, pk=int(raw), application_id=env.application_id)


def rollback_changes(plan) -> list[dict]:
    """Service by service: the image that runs now and the one the rollback brings back."""
    if plan.target is None:
        return []
    now = plan.current.release.artifact_map() if plan.current else {}
    back = plan.target.artifact_map()
    return [
        {"service": service, "now": now.get(service, ""), "back": back.get(service, ""),
         "changes": now.get(service) != back.get(service)}
        for service in sorted(set(now) | set(back))
    ]  # fmt: skip


COST_RANGES = (30, 90)


@login_required
@require_safe
def application_costs(request: HttpRequest, slug: str) -> HttpResponse:
    """Actual spend of the environments the user may see: daily, against budget
    and against the estimate of what runs there, as plotly charts."""
    application = get_object_or_404(visible_applications(request.user), slug=slug)
    # An unknown range falls back to the default rather than failing the page.
    days = next((d for d in COST_RANGES if request.GET.get("days") == str(d)), COST_RANGES[0])
    environments = list(
        visible_environments(request.user)
        .filter(application=application)
        .select_related("application")
        .order_by("order")
    )
    estimates = current_estimates(e.pk for e in environments)
    report = cost_report(environments, days, estimates)
    context = {"application": application, "days": days, "ranges": COST_RANGES, **report}
    return render(request, "environments/cost_page.html", context)
