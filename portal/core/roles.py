"""Permission checks by role in an environment. Every view, endpoint and
socket goes through these; none checks roles on its own."""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.db.models import QuerySet

from portal.core.choices import Role
from portal.core.models import Membership
from portal.core.prepared import prepared


class PolicyError(Exception):
    """A request the rules refuse; the message tells the user why and what to do."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code


class Forbidden(PolicyError):
    status_code = 403


class Conflict(PolicyError):
    status_code = 409


class Unavailable(PolicyError):
    """A component the request needs is down (e.g. the job queue): nothing was
    written, and the same request can simply be sent again later."""

    status_code = 503


_ROLE_CACHE = "_gantry_roles"


def _role_cache(user) -> dict[int, set[str]]:
    """{environment id: the user's roles there}, kept on the user object for
    the request (a new request loads a new user)."""
    return user.__dict__.setdefault(_ROLE_CACHE, {})


def forget_roles(user) -> None:
    """Drop what the user object has read of its roles (they just changed)."""
    user.__dict__.pop(_ROLE_CACHE, None)


def roles_in(user, environment) -> set[str]:
    if not user.is_authenticated or not user.is_active:
        return set()
    cache = _role_cache(user)
    env_id = getattr(environment, "pk", environment)
    if env_id not in cache:
        cache[env_id] = set(
            Membership.objects.filter(user=user, environment_id=env_id).values_list(
                "role", flat=True
            )
        )
    return cache[env_id]


def prime_roles(user, environment_ids: Iterable[int]) -> None:
    """Load the user's roles in many environments with one query.

    `has_role` keeps what it read in a per-user cache; filling it lets a page
    ask about every environment it lists without a query per row.
    """
    if not user.is_authenticated:
        return
    cache = _role_cache(user)
    missing = [pk for pk in set(environment_ids) if pk not in cache]
    if not missing:
        return
    for pk in missing:
        cache[pk] = set()
    rows = Membership.objects.filter(user=user, environment_id__in=missing)
    for env_id, role in rows.values_list("environment_id", "role"):
        cache[env_id].add(role)


# Read on every page (the navigation badge among them): prepared, so not
# compiled again on each request.
@prepared(user_id=int)
def _memberships_of(user_id):
    return Membership.objects.filter(user_id=user_id).values_list("environment_id", "role")


@prepared()
def _every_environment():
    # All of them, unordered and unjoined: the callers only ask has_role of each.
    return apps.get_model("environments", "Environment").objects.values_list("pk", flat=True)


def visible_environment_ids(user) -> list[int]:
    """The ids of visible_environments(user), with the user's roles there
    primed (has_role then asks no query): one query, two for a superuser.

    A member sees exactly the environments they hold a role in, so their
    memberships are both the list and the roles. A superuser sees every
    environment; their own memberships still say where they may deploy and
    approve.
    """
    if not user.is_authenticated or not user.is_active:
        return []  # as roles_in: an inactive account holds no role anywhere
    held: dict[int, set[str]] = {}
    for env_id, role in _memberships_of.list(user_id=user.pk):
        held.setdefault(env_id, set()).add(role)
    if user.is_superuser:
        held = {pk: held.get(pk, set()) for pk in _every_environment.list()}
    # A fresh read of every role the user holds: what was kept before is
    # replaced, so a role withdrawn since is not answered from it.
    cache = _role_cache(user)
    cache.clear()
    cache.update(held)
    return list(held)


def has_role(user, environment, *roles: str) -> bool:
    """True if the user holds any of `roles` in the environment.

    Superusers see and administer everything, but deploying and approving
    always need an explicit membership: separation of duties is not waived.
    """
    if user.is_authenticated and user.is_superuser and set(roles) & {Role.VIEWER, Role.ADMIN}:
        return True
    held = roles_in(user, environment)
    if Role.ADMIN in held:
        return True
    # Every role implies read access.
    if Role.VIEWER in roles and held:
        return True
    return bool(held & set(roles))


def has_role_anywhere(user, *roles: str) -> bool:
    """True if the user holds any of `roles` in some environment (superusers: always)."""
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    return Membership.objects.filter(user=user, role__in=roles).exists()


# The catalog's models by name: roles sit below the catalog they grant access to.


def visible_environments(user) -> QuerySet:
    qs = apps.get_model("environments", "Environment").objects.all()
    if user.is_superuser:
        return qs
    return qs.filter(memberships__user=user).distinct()


def visible_applications(user) -> QuerySet:
    qs = apps.get_model("environments", "Application").objects.all()
    if user.is_superuser:
        return qs
    return qs.filter(environments__memberships__user=user).distinct()
