"""The dashboard: one card per environment the user can see, grouped by
application, problems first, refreshed card by card over a WebSocket
(portal/dashboard_hub.py tells the page which card changed)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from environments.choices import Tier
from environments.models import Application, Environment
from portal import card_cache
from portal.card_cache import Card
from portal.core.roles import visible_environments


def dashboard_environments(user, application: str = "", tier: str = "") -> QuerySet:
    """The environments the user may see, filtered, in dashboard order: what
    the page lays out (the cards themselves come from portal/card_cache.py)."""
    environments = Environment.objects.filter(pk__in=visible_environments(user).values("pk"))
    if application:
        environments = environments.filter(application__slug=application)
    if tier:
        environments = environments.filter(tier=tier)
    return (
        environments.select_related("application")
        .only("pk", "order", "application", "application__slug", "application__name")
        .order_by("application__name", "order")
    )


def group_cards(cards: list[Card]) -> list[tuple[Application, list[Card]]]:
    """By application; applications with the most urgent problems first, and
    inside each, cards with problems first, then in promotion order."""
    by_application: dict[int, list[Card]] = {}
    for card in cards:
        by_application.setdefault(card.environment.application_id, []).append(card)
    groups = []
    for group in by_application.values():
        group.sort(key=lambda c: (c.rank, c.environment.order))
        groups.append((group[0].environment.application, group))
    groups.sort(key=lambda g: (g[1][0].rank, g[0].name))
    return groups


# -- views -----------------------------------------------------------------------


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    """The home page: every visible environment at a glance, problems first."""
    application = request.GET.get("application", "").strip()
    tier = request.GET.get("tier", "").strip()
    if tier not in Tier.values:
        tier = ""  # an unknown tier shows everything rather than an empty page
    environments = list(dashboard_environments(request.user, application, tier))
    cards = card_cache.cards_for(environments)
    context = {
        "groups": group_cards(cards),
        "cards": cards,
        "problem_count": sum(card.problems for card in cards),
        "applications": Application.objects.filter(
            environments__in=visible_environments(request.user).values("pk")
        )
        .distinct()
        .only("slug", "name"),
        "tiers": Tier.choices,
        "selected_application": application,
        "selected_tier": tier,
        "filtered": bool(application or tier),
    }
    return render(request, "portal/dashboard.html", context)


@login_required
@require_safe
def dashboard_card(request: HttpRequest, environment_id: int) -> HttpResponse:
    """One card's HTML, re-fetched by the page when the socket says it changed."""
    environments = list(dashboard_environments(request.user).filter(pk=environment_id))
    cards = card_cache.cards_for(environments)
    if not cards:
        raise Http404("No such environment.")
    return HttpResponse(cards[0].html)
