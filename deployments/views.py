"""Release and deployment pages: register a release, request a deployment, and
show approvers exactly what they sign off (images, diff, plan, policy).

Every state change goes through the model methods; a PolicyError they raise is
shown to the user (Forbidden as a 403 page, anything else as a message), never
as a 500.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
    require_safe,
)

from deployments import evidence, inbox, metrics, rollback, state_lock
from deployments.choices import STATUS_COLOURS, Kind, Status
from deployments.forms import (
    ARTIFACT_PREFIX,
    DecisionForm,
    DeploymentFilterForm,
    DeploymentRequestForm,
    EmergencyReviewForm,
    ForceUnlockForm,
    PolicyOverrideForm,
    ReleaseForm,
)
from deployments.models import (
    Approval,
    Artifact,
    Deployment,
    Release,
    StepRun,
    artifacts_with_services,
    emergency,
    load_artifacts,
    runs_now_in,
    with_current_deployment,
)
from deployments.models.policy import check_overrider
from deployments.timeline import timeline_html
from environments import pricing
from environments.models import Application, Environment, Service
from environments.views import decorate_environment, paginate
from portal.core import mfa, totp
from portal.core.choices import Role
from portal.core.mfa import StepUpRequired
from portal.core.models import SsoIdentity
from portal.core.prepared import PreparedQuery, prepared
from portal.core.roles import (
    Forbidden,
    PolicyError,
    Unavailable,
    has_role,
    prime_roles,
    visible_applications,
    visible_environment_ids,
    visible_environments,
)

CANCELLABLE = (Status.PLANNING, Status.AWAITING_APPROVAL, Status.QUEUED, Status.RUNNING)


def decorate_deployments(deployments: Iterable[Deployment]) -> None:
    for deployment in deployments:
        deployment.status_colour = STATUS_COLOURS.get(deployment.status, "grey")


@dataclass
class RollbackPlan:
    """What a rollback of an environment would do, as deployments/rollback.py decides."""

    current: Deployment | None  # what runs now
    target: Release | None  # what a rollback brings back (None: nothing, see why_not)
    target_run: Deployment | None  # the target's newest success here
    undo: Deployment | None
    why_not: str = ""


_ASK = object()


def rollback_plan(
    env: Environment,
    release: Release | None = None,
    *,
    current: Deployment | None = _ASK,
    succeeded: list[rollback.Succeeded] | None = None,
) -> RollbackPlan:
    """The default rollback of `env`, or to `release`; never raises for the page.
    A page that has already read what runs now (`current`) or the releases that
    succeeded here (`succeeded_releases`) passes them on, saving their queries."""
    if current is _ASK:
        current = env.deployments.runs_now()
    try:
        if release is None:
            target, undo = rollback.default_target(env)
        else:
            target, undo = rollback.chosen_target(env, release)
    except PolicyError as exc:
        return RollbackPlan(current, None, None, None, exc.message)
    # The target's newest success here: in the list when the page has it (its
    # rows are each release's newest success, in the same order).
    target_run = next((s.deployment for s in succeeded or () if s.release.pk == target.pk), None)
    if target_run is None:
        target_run = (
            env.deployments.filter(release=target, status=Status.SUCCEEDED).latest_first().first()
        )
    return RollbackPlan(current, target, target_run, undo)


def _visible_release(request: HttpRequest, pk) -> Release:
    releases = Release.objects.select_related("application", "created_by").prefetch_related(
        artifacts_with_services()
    )
    return get_object_or_404(releases, pk=pk, application__in=visible_applications(request.user))


def _visible_deployment(
    request: HttpRequest, pk: int, *related: str, artifacts: bool = True
) -> Deployment:
    """The deployment if the user holds a role in its environment, else 404;
    `related` names more relations to join for this page. `artifacts=False`
    leaves its release's artifacts to the caller (see _with_artifacts)."""
    # Read by its key, then the role check: seeing a deployment is holding a
    # role in its environment, the same has_role the page asks anyway (one
    # query, or none for a superuser), rather than a DISTINCT join over the
    # memberships inside the page's widest query (~4 % of its time).
    deployment = _deployment_row(related).first(pk=pk)
    if deployment is None or not has_role(request.user, deployment.environment, Role.VIEWER):
        raise Http404("No Deployment matches the given query.")
    if artifacts:
        load_artifacts(deployment.release)
    return deployment


@functools.cache
def _deployment_row(related: tuple[str, ...]) -> PreparedQuery:
    """The deployment's own row with what its pages read, joined."""

    @prepared(pk=int)
    def deployment_row(pk: int) -> QuerySet:
        # Joined: what every page reads. The relations most deployments leave
        # empty (approver groups, break-glass, reviewer, policy overrider,
        # rolled-back run) are left to load when a page reads them: an empty
        # foreign key costs nothing then, a set one the same single query a
        # prefetch makes, and Django's prefetch machinery cost ~2 ms a page
        # even with nothing to fetch. Each join more makes PostgreSQL plan the
        # query longer (~10 ms at 20 joins) than run it, so they are not
        # joined either.
        # Its release's artifacts are read by a prepared query of their own
        # (load_artifacts): a prefetch here would be compiled on every call.
        deployments = Deployment.objects.select_related(
            *related,
            "release__application",
            "release__created_by",
            "environment__application",
            "requested_by",
            "policy_check",
        )
        return deployments.filter(pk=pk)

    return deployment_row


def _deployer_environments(user, application: Application) -> list[Environment]:
    environments = list(
        visible_environments(user)
        .filter(application=application)
        .prefetch_related("freeze_windows")
        .order_by("order")
    )
    prime_roles(user, [e.pk for e in environments])
    return [e for e in environments if has_role(user, e, Role.DEPLOYER)]


# -- releases ----------------------------------------------------------------------


@login_required
@require_safe
def release_list(request: HttpRequest, slug: str) -> HttpResponse:
    application = get_object_or_404(visible_applications(request.user), slug=slug)
    releases = paginate(
        request,
        application.releases.select_related("created_by").prefetch_related(
            artifacts_with_services()
        ),
    )
    context = {
        "application": application,
        "page_obj": releases,
        "can_register": bool(_deployer_environments(request.user, application)),
    }
    return render(request, "deployments/release_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def release_new(request: HttpRequest, slug: str) -> HttpResponse:
    """Register a release: one image pinned by digest for every service."""
    application = get_object_or_404(visible_applications(request.user), slug=slug)
    if not _deployer_environments(request.user, application):
        raise PermissionDenied(
            f"You need the deployer role in an environment of {application} to register releases."
        )
    services = list(Service.objects.filter(application=application))
    form = ReleaseForm(request.POST or None, services=services, application=application)
    resolved = []
    if request.method == "POST" and form.is_valid():
        try:
            artifacts, resolved = Release.resolve_tags(application, form.artifacts(), request.user)
            if resolved:
                # Tags resolved: show the digests they name now, register on confirm.
                form = ReleaseForm(
                    {**request.POST.dict(), **{ARTIFACT_PREFIX + r["service"]: r["image"]
                                               for r in resolved}},
                    services=services, application=application,
                )  # fmt: skip
                form.is_valid()
                context = {"application": application, "form": form, "resolved": resolved}
                return render(request, "deployments/release_form.html", context)
            release = Release.register(
                application,
                form.cleaned_data["version"],
                artifacts,
                request.user,
                notes=form.cleaned_data["notes"],
                commit=form.cleaned_data["commit"],
                commit_author=form.cleaned_data["commit_author"],
            )
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None
        except PolicyError as exc:
            form.add_policy_error(exc)
        else:
            messages.success(request, f"Release {release.version} registered.")
            return redirect("release-detail", pk=release.pk)
    status = 400 if form.errors else 200
    context = {"application": application, "form": form}
    return render(request, "deployments/release_form.html", context, status=status)


@login_required
@require_safe
def release_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A release's images, where it runs now, and its deployments."""
    release = _visible_release(request, pk)
    environments = list(
        with_current_deployment(
            visible_environments(request.user).filter(application=release.application_id)
        ).order_by("order")
    )
    deployments = list(
        release.deployments.filter(environment__in=[e.pk for e in environments])
        .select_related("environment__application", "requested_by")
        .order_by("-created_at")[:50]
    )
    decorate_deployments(deployments)
    prime_roles(request.user, [e.pk for e in environments])
    context = {
        "application": release.application,
        "release": release,
        "runs_in": [e for e in environments if e.current_release_id == release.pk],
        "rolled_back": _rolled_back_from(release, environments),
        "deployments": deployments,
        "can_deploy": any(has_role(request.user, e, Role.DEPLOYER) for e in environments),
    }
    return render(request, "deployments/release_detail.html", context)


def _rolled_back_from(release: Release, environments: list[Environment]) -> list[Deployment]:
    """Per environment where the release is rolled away from now (its newest
    forward success there carries the mark), that success."""
    newest = {}
    runs = release.deployments.filter(
        environment__in=environments, kind=Kind.DEPLOY, status=Status.SUCCEEDED
    ).select_related("environment")
    for deployment in runs.latest_first():
        newest.setdefault(deployment.environment_id, deployment)
    return [d for d in newest.values() if d.rolled_back_at is not None]


# -- deployments -------------------------------------------------------------------


@login_required
@require_safe
def approvals_inbox(request: HttpRequest) -> HttpResponse:
    """Waiting for me: what the user may decide now, oldest first."""
    visible = visible_environment_ids(request.user)  # read once for both lists
    deployments = inbox.deployments_awaiting(request.user, visible)
    decorate_deployments(deployments)
    overrides = inbox.overrides_awaiting(request.user, visible)
    context = {"deployments": deployments, "overrides": overrides}
    return render(request, "deployments/inbox.html", context)


@login_required
@require_safe
def approvals_count(request: HttpRequest) -> HttpResponse:
    """The navigation bar's badge, fetched after the page (HTMX): no page pays for it."""
    return render(request, "deployments/_inbox_count.html", {"count": inbox.count(request.user)})


@login_required
@require_safe
def deployment_list(request: HttpRequest) -> HttpResponse:
    """Deployments in the user's environments, newest first, filtered by status and environment."""
    environments = visible_environments(request.user).select_related("application")
    environments = environments.order_by("application__name", "order")
    form = DeploymentFilterForm(request.GET, environments=environments)
    form.is_valid()  # an invalid filter is reported next to its field and not applied
    deployments = Deployment.objects.filter(environment__in=visible_environments(request.user))
    if form.cleaned_data.get("status"):
        deployments = deployments.filter(status=form.cleaned_data["status"])
    if form.cleaned_data.get("environment"):
        deployments = deployments.filter(environment=form.cleaned_data["environment"])
    page = paginate(
        request,
        deployments.select_related("release", "environment__application", "requested_by").order_by(
            "-created_at", "-id"
        ),
    )
    decorate_deployments(page)
    return render(request, "deployments/deployment_list.html", {"form": form, "page_obj": page})


@login_required
@require_http_methods(["GET", "POST"])
def deployment_new(request: HttpRequest) -> HttpResponse:
    """Ask for a release to go to one of the user's deployer environments."""
    release_pk = request.GET.get("release", "")
    if not release_pk.isdigit():
        raise Http404("Choose a release to deploy (its page has a “Request deployment” link).")
    release = _visible_release(request, release_pk)
    environments = _deployer_environments(request.user, release.application)
    if not environments:
        raise PermissionDenied(
            f"You need the deployer role in an environment of {release.application} to deploy."
        )
    choices = Environment.objects.filter(pk__in=[e.pk for e in environments]).order_by("order")
    form = DeploymentRequestForm(request.POST or None, environments=choices)
    unavailable = False
    if request.method == "POST" and form.is_valid():
        try:
            deployment = Deployment.request(
                release, form.cleaned_data["environment"], request.user,
                form.cleaned_data["reason"], not_before=form.cleaned_data.get("not_before"),
                not_after=form.cleaned_data.get("not_after"),
            )  # fmt: skip
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None
        except PolicyError as exc:
            # The job queue down (Unavailable): the form again, saying so, with a 503.
            unavailable = isinstance(exc, Unavailable)
            form.add_policy_error(exc)
        else:
            messages.success(request, f"Deployment #{deployment.pk} requested.")
            return redirect("deployment-detail", pk=deployment.pk)
    # Freezes are shown up front, so nobody has to submit the form to find out.
    frozen = [e for e in environments if decorate_environment(e).freeze]
    for environment in frozen:  # requests are allowed while break-glass is active: say so
        environment.override = environment.active_override()
    context = {
        "application": release.application,
        "release": release,
        "form": form,
        "frozen": frozen,
    }
    status = 503 if unavailable else 400 if form.errors else 200
    return render(request, "deployments/deployment_form.html", context, status=status)


@dataclass
class ServiceChange:
    """One row of the diff an approver reads: this service, before and after."""

    service: Service
    artifact: Artifact
    running: Artifact | None

    @property
    def change(self) -> str:
        if self.running is None:
            return "new"
        return "unchanged" if self.running.image_ref == self.artifact.image_ref else "changed"


def _with_artifacts(*deployments: Deployment | None) -> None:
    """Load the artifacts of the deployments' releases, in one query for all."""
    load_artifacts(*{id(d.release): d.release for d in deployments if d is not None}.values())


def _diff(release: Release, running: Deployment | None) -> list[ServiceChange]:
    now = {a.service_id: a for a in running.release.artifacts.all()} if running else {}
    return [ServiceChange(a.service, a, now.get(a.service_id)) for a in release.artifacts.all()]


def _step_runs(deployment: Deployment) -> list[StepRun]:
    """As the step list shows them, with who asked for a force-unlock in progress."""
    return _step_runs_of.of(deployment)


@prepared(deployment_id=int)
def _step_runs_of(deployment_id: int) -> QuerySet:
    return (
        StepRun.objects.filter(deployment_id=deployment_id)
        .select_related("unlock_requested_by")
        .order_by("phase", "order")
    )


@prepared(deployment_id=int)
def _approvals_of(deployment_id: int) -> QuerySet:
    return Approval.objects.filter(deployment_id=deployment_id).select_related("user")


def _cannot_approve_because(
    deployment: Deployment, user, approvals: list[Approval], digest: str
) -> str:
    """Why the user may not decide on this deployment now ("" when they may);
    `digest` is the deployment's approval_digest()."""
    if deployment.status != Status.AWAITING_APPROVAL:
        return ""
    if any(a.user_id == user.pk and a.digest == digest for a in approvals):
        return "You have already decided on this deployment."
    try:
        deployment.check_approver(user)  # the model's own rules, so page and model agree
        if check := deployment.policy():
            check.refuse_if_blocked(deployment.environment)
    except (Forbidden, PolicyError) as exc:
        return exc.message
    return ""


@login_required
@require_safe
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Everything an approver needs to see before signing off."""
    # The whole page joins the cost estimate approval_summary reads; the polled status box doesn't.
    related = () if request.htmx else ("cost_estimate",)
    # The artifacts of its release are read below with those of what runs now.
    deployment = _visible_deployment(request, pk, *related, artifacts=False)
    deployment.status_colour = STATUS_COLOURS.get(deployment.status, "grey")
    if request.htmx:
        # The status box polls itself while the deployment is in progress.
        return render(request, "deployments/_deployment_status.html", {"deployment": deployment})
    env = deployment.environment
    user = request.user
    running = runs_now_in(env)
    # An open request is compared with what runs now; a finished one with what
    # ran when it started (or was requested), kept with it.
    if deployment.is_open:
        compared = running
    elif deployment.compared_with_id:
        compared = Deployment.objects.select_related("release").get(pk=deployment.compared_with_id)
    else:
        compared = None
    _with_artifacts(deployment, running, compared)
    digest = deployment.approval_digest()
    approvals = _approvals_of.of(deployment)
    for approval in approvals:
        approval.still_valid = approval.counts_for(digest)
    refusal = _cannot_approve_because(deployment, user, approvals, digest)
    may_decide = deployment.status == Status.AWAITING_APPROVAL and not refusal
    authentication = mfa.of_session(request.session)
    may_cancel = (
        deployment.status in CANCELLABLE
        and deployment.cancel_requested_at is None
        and (user.pk == deployment.requested_by_id or has_role(user, env, Role.ADMIN))
    )
    decorate_environment(env)
    step_runs = _step_runs(deployment)
    plan_runs = [s for s in step_runs if s.phase == "plan" and s.outputs]
    context = {
        "application": env.application,
        "environment": env,
        "deployment": deployment,
        "release": deployment.release,
        "changes": _diff(deployment.release, compared),
        "running": running,
        "compared": compared,
        "approvals": approvals,
        "valid_count": sum(1 for a in approvals if a.still_valid),
        "digest": digest,
        "policy": env.policy_snapshot(),
        "previous": env.previous() if env.require_previous_success else None,
        "may_decide": may_decide,
        "authentication": authentication,
        "step_up": _step_up_needed(env, user, authentication) if may_decide else "",
        "refusal": refusal,
        "may_cancel": may_cancel,
        "decision_form": DecisionForm(),
        "step_runs": step_runs,
        "may_force_unlock": has_role(user, env, Role.ADMIN),
        "plan_runs": plan_runs,
        "cost": pricing.approval_summary(deployment, [s.outputs for s in plan_runs]),
        "may_roll_back": _may_roll_back(deployment, running, user),
        "timeline": timeline_html(deployment, step_runs),
        "policy_check": deployment.policy(),
        "approvals_needed": deployment.approvals_needed(),
        "may_override_policy": _may_override_policy(deployment, user),
        "override_form": PolicyOverrideForm(),
        "review_refusal": _review_refusal(deployment, user),
        "review_form": EmergencyReviewForm(),
        "now": timezone.now(),
    }
    return render(request, "deployments/deployment_detail.html", context)


def _review_refusal(deployment: Deployment, user) -> str | None:
    """ "" when there is nothing to review, None when the user may review this
    emergency change now, else why they may not."""
    if not deployment.emergency or deployment.reviewed_at is not None:
        return ""
    try:
        emergency.check_reviewer(deployment, user)
    except PolicyError as exc:  # Conflict and Forbidden are PolicyErrors
        return exc.message
    return None


def _may_override_policy(deployment: Deployment, user) -> bool:
    """The model's own rule (policy.check_overrider), so page and model agree."""
    if deployment.status != Status.AWAITING_APPROVAL:
        return False
    try:
        check_overrider(deployment, deployment.policy(), user)
    except PolicyError:  # Conflict and Forbidden are PolicyErrors
        return False
    return True


def _step_up_needed(env: Environment, user, authentication: mfa.Authentication | None) -> str:
    """How the approver must confirm their identity before approving here:
    "" (no need), "totp", "sso" (at the identity provider) or "enrol" (no
    second factor set up yet)."""
    minutes = env.approval_mfa_minutes
    if not minutes or (authentication is not None and authentication.fresh(minutes)):
        return ""
    if SsoIdentity.objects.filter(user=user).exists():
        return "sso"
    return "totp" if totp.has_totp(user) else "enrol"


def _may_roll_back(deployment: Deployment, running: Deployment | None, user) -> bool:
    """Offer a rollback from the deployment that runs now, when an earlier release ran."""
    if running is None or running.pk != deployment.pk:
        return False
    if not has_role(user, deployment.environment, Role.DEPLOYER):
        return False
    return rollback_plan(deployment.environment).target is not None


@login_required
@require_safe
def deployment_steps(request: HttpRequest, pk: int) -> HttpResponse:
    """The step progress list, re-fetched by the live log panel on each status change."""
    deployment = _visible_deployment(request, pk)
    step_runs = _step_runs(deployment)
    return render(
        request,
        "deployments/_step_runs.html",
        {
            "deployment": deployment,
            "step_runs": step_runs,
            "may_force_unlock": has_role(request.user, deployment.environment, Role.ADMIN),
        },
    )


@login_required
@require_POST
def step_force_unlock(request: HttpRequest, pk: int, step_pk: int) -> HttpResponse:
    """An environment admin asks to release the Terraform state lock a dead run
    left; a job on the high queue runs Terraform, the page shows its result."""
    deployment = _visible_deployment(request, pk)
    step_run = get_object_or_404(deployment.step_runs, pk=step_pk)
    form = ForceUnlockForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Reason: " + " ".join(form.errors["reason"]))
        return redirect("deployment-detail", pk=pk)
    try:
        state_lock.request_force_unlock(
            deployment, step_run, request.user, form.cleaned_data["reason"]
        )
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except PolicyError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            "Force-unlock requested: it runs in the background and its result appears in the "
            "steps and the log below. Once the lock is released, request a new plan.",
        )
    return redirect("deployment-detail", pk=pk)


def _decide(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Apply approve/reject/cancel through the model; its errors become messages."""
    deployment = _visible_deployment(request, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Comment: " + " ".join(form.errors["comment"]))
        return redirect("deployment-detail", pk=pk)
    try:
        if action == "cancel":
            deployment.cancel(request.user, form.cleaned_data["comment"])
        else:
            seen = {"seen_digest": form.cleaned_data["digest"]} if action == "approve" else {}
            getattr(deployment, action)(request.user, form.cleaned_data["comment"],
                                        authentication=mfa.of_session(request.session),
                                        **seen)  # fmt: skip
    except StepUpRequired as exc:
        messages.warning(request, exc.message)
        return redirect("deployment-detail", pk=pk)
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except PolicyError as exc:
        messages.error(request, exc.message)
    else:
        deployment.refresh_from_db(fields=["status"])
        if deployment.status == Status.RUNNING:
            messages.success(request, "Cancel requested: the run stops within a few seconds.")
            return redirect("deployment-detail", pk=pk)
        done = {"approve": "Approved", "reject": "Rejected", "cancel": "Cancelled"}[action]
        messages.success(
            request, f"{done}. The deployment is now {deployment.get_status_display().lower()}."
        )
    return redirect("deployment-detail", pk=pk)


def _with_text(request: HttpRequest, pk: int, form_class, act, done) -> HttpResponse:
    """A POST carrying one text field (a review, a reason) to a model method:
    form errors and the model's refusals become messages on the deployment page."""
    deployment = _visible_deployment(request, pk)
    form = form_class(request.POST)
    (name,) = form.fields
    if not form.is_valid():
        messages.error(request, f"{form.fields[name].label or name.title()}: "
                       + " ".join(form.errors[name]))  # fmt: skip
        return redirect("deployment-detail", pk=pk)
    try:
        act(deployment, request.user, form.cleaned_data[name])
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except PolicyError as exc:
        messages.error(request, exc.message)
    else:
        deployment.refresh_from_db(fields=["status"])
        messages.success(request, done(deployment))
    return redirect("deployment-detail", pk=pk)


@login_required
@require_POST
def deployment_emergency_review(request: HttpRequest, pk: int) -> HttpResponse:
    """An approver or admin who took no part reviews an emergency change."""
    return _with_text(
        request, pk, EmergencyReviewForm, Deployment.review_emergency,
        lambda _: "Review recorded in the audit trail and the evidence pack.",
    )  # fmt: skip


@login_required
@require_POST
def deployment_policy_override(request: HttpRequest, pk: int) -> HttpResponse:
    """An environment admin lets the plan's soft-mandatory violations pass."""
    return _with_text(
        request, pk, PolicyOverrideForm, Deployment.override_policy,
        lambda deployment: "Policy overridden; the reason is in the audit trail and the "
        f"evidence pack. The deployment is now {deployment.get_status_display().lower()}.",
    )  # fmt: skip


@login_required
@require_POST
def deployment_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "approve")


@login_required
@require_POST
def deployment_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "reject")


@login_required
@require_POST
def deployment_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "cancel")


# -- evidence packs and delivery metrics -----------------------------------------


def _evidence_pack(request: HttpRequest, pk: int, export_format: str) -> dict:
    """Build a deployment's pack for a viewer of its environment; the export is audited."""
    return evidence.export_pack(_visible_deployment(request, pk), request.user, export_format)


@login_required
@require_GET  # each export is audited: a HEAD must not record one nobody received
def deployment_evidence_json(request: HttpRequest, pk: int) -> HttpResponse:
    """The evidence pack as a JSON download."""
    pack = _evidence_pack(request, pk, "json")
    response = JsonResponse(pack, json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="deployment-{pk}-evidence.json"'
    return response


@login_required
@require_GET  # each export is audited: a HEAD must not record one nobody received
def deployment_evidence_html(request: HttpRequest, pk: int) -> HttpResponse:
    """The evidence pack as one self-contained, printable page (no scripts, no links out)."""
    pack = _evidence_pack(request, pk, "html")
    response = render(request, "deployments/evidence.html", {"pack": pack})
    # Shown in the browser, and saved under a useful name.
    response["Content-Disposition"] = f'inline; filename="deployment-{pk}-evidence.html"'
    return response


@login_required
@require_safe
def application_metrics(request: HttpRequest, slug: str) -> HttpResponse:
    """DORA's four keys for the application's environments the user may see."""
    application = get_object_or_404(visible_applications(request.user), slug=slug)
    environments = list(
        visible_environments(request.user).filter(application=application).order_by("order")
    )
    errors: dict[str, str] = {}
    raw_days = request.GET.get("days", str(metrics.DEFAULT_RANGE)).strip()
    # Matched as text: int() of arbitrary input ("²", 5,000 digits) can raise.
    days = {str(choice): choice for choice in metrics.RANGES}.get(raw_days, 0)
    if not days:
        errors["days"] = f"Choose a range of {', '.join(map(str, metrics.RANGES))} days."
        days = metrics.DEFAULT_RANGE
    chosen = request.GET.get("environment", "").strip()
    shown = [e for e in environments if not chosen or e.slug == chosen]
    if chosen and not shown:
        errors["environment"] = f"No environment {chosen!r} that you may see in {application}."
        shown = environments
    result = metrics.delivery_metrics(shown, days)
    context = {
        "application": application,
        "environments": environments,
        "days": days,
        "ranges": metrics.RANGES,
        "chosen": chosen if "environment" not in errors else "",
        "errors": errors,
        "result": result,
        "keys": list(result.keys.values()),
        "charts": metrics.charts(result),
    }
    return render(request, "deployments/metrics.html", context, status=400 if errors else 200)
