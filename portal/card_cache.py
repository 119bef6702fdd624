"""Built dashboard cards, kept in the cache per environment and card version.

A dashboard of 100 cards reads one row per environment and two cache keys
per card, and builds (portal/cards.py) only the cards whose environment
changed since they were kept. A card's HTML does not depend on who looks at
it: which cards someone sees is decided by the environment query, per
request, never by the cache.

A kept card is read again only under the card version it was built for
(environments/live.py gives a new one after every change, and builds the
card then) and for the reporting day its cost figures run through. Cards
show absolute times (the page's script words them "5 minutes ago"), so a
kept card does not age; DASHBOARD_CARD_SECONDS only frees memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from environments.costs import reporting_day
from environments.live import card_versions
from environments.models import Environment
from portal.cards import build_cards, card_environments, render_card

log = logging.getLogger(__name__)

CARD_KEY = "card:{}:{}:{}"  # environment, card version, reporting day


@dataclass
class Card:
    """One card as the page lays it out: its HTML and what it is sorted by."""

    environment: Environment
    html: str
    rank: int
    problems: bool


def cards_for(environments: list[Environment]) -> list[Card]:
    """Cards for `environments` (already limited to what the user may see),
    from the cache where they are current, built and kept where not."""
    ids = [env.pk for env in environments]
    keys = _keys(ids) if settings.DASHBOARD_CARD_SECONDS else {}
    kept = _read(keys)
    stale = [pk for pk in ids if pk not in kept]
    if stale:
        built = build_cards(card_environments(stale))
        fresh = {card.environment.pk: _entry(card) for card in built}
        _keep({keys[pk]: fresh[pk] for pk in fresh if pk in keys})
        kept.update(fresh)
    return [Card(env, *kept[env.pk]) for env in environments if env.pk in kept]


def rebuild(environment_id: int) -> None:
    """Build the environment's card and keep it under its current version
    (called after a change committed and gave it a new one)."""
    keys = _keys([environment_id])
    if not keys:
        return
    for card in build_cards(card_environments([environment_id])):
        _keep({keys[environment_id]: _entry(card)})


def _entry(card) -> tuple:
    """What is kept of a built card: the fields of `Card` after its environment."""
    return render_card(card), card.rank, bool(card.problems)


def _keys(ids: list[int]) -> dict[int, str]:
    """{environment id: its card's cache key}; empty when the cache is down."""
    try:
        versions = card_versions(ids)
    except RedisError:
        log.warning("card versions unreadable; building every card", exc_info=True)
        return {}
    day = reporting_day().isoformat()
    return {pk: CARD_KEY.format(pk, versions[pk], day) for pk in ids}


def _read(keys: dict[int, str]) -> dict[int, tuple]:
    if not keys:
        return {}
    try:
        found = cache.get_many(keys.values())
    except RedisError:
        log.warning("cached cards unreadable", exc_info=True)
        return {}
    return {pk: found[key] for pk, key in keys.items() if key in found}


def _keep(cards: dict[str, tuple]) -> None:
    if not cards:
        return
    try:
        cache.set_many(cards, timeout=settings.DASHBOARD_CARD_SECONDS)
    except RedisError:
        log.warning("cards not kept", exc_info=True)
