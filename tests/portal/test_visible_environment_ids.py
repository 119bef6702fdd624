"""visible_environment_ids: the environments visible_environments() gives,
read with the roles has_role() then answers from, in one query (two for a
superuser). Any memberships, any user: the same answers as the plain reads."""

from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.core.choices import Role
from portal.core.models import Membership
from portal.core.roles import has_role, visible_environment_ids, visible_environments

ROLES = [Role.VIEWER, Role.DEPLOYER, Role.APPROVER, Role.ADMIN]
ASKED = [(Role.VIEWER,), (Role.DEPLOYER,), (Role.APPROVER,), (Role.ADMIN,),
         (Role.APPROVER, Role.ADMIN)]  # fmt: skip

# (environment index, role) pairs the user holds; the superuser flag.
memberships = st.sets(st.tuples(st.integers(0, 2), st.sampled_from(ROLES)), max_size=6)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(held=memberships, superuser=st.booleans())
def test_the_ids_and_roles_are_those_of_the_plain_reads(catalog, held, superuser):
    environments = list(catalog.environments.order_by("order"))
    user, _ = User.objects.get_or_create(username="probe")
    User.objects.filter(pk=user.pk).update(is_superuser=superuser)
    Membership.objects.filter(user=user).delete()
    for index, role in held:
        Membership.objects.create(user=user, environment=environments[index], role=role)

    primed = User.objects.get(pk=user.pk)
    with CaptureQueriesContext(connection) as read:
        ids = visible_environment_ids(primed)
        # Asked about the environments it sees, has_role reads nothing more.
        for pk in ids:
            for roles in ASKED:
                has_role(primed, pk, *roles)
    answers = {(e.pk, roles): has_role(primed, e.pk, *roles)
               for e in environments for roles in ASKED}  # fmt: skip

    fresh = User.objects.get(pk=user.pk)
    assert sorted(ids) == sorted(visible_environments(fresh).values_list("pk", flat=True))
    # Asked of a user object with nothing primed, has_role reads each environment itself.
    assert answers == {
        (e.pk, roles): has_role(User.objects.get(pk=user.pk), e.pk, *roles)
        for e in environments
        for roles in ASKED
    }
    assert len(read) == (2 if superuser else 1)


def test_a_member_of_nothing_sees_nothing_after_one_query(users, catalog):
    with CaptureQueriesContext(connection) as read:
        assert visible_environment_ids(users["mallory"]) == []
    assert len(read) == 1
    assert not has_role(users["mallory"], catalog.environments.first(), Role.VIEWER)


def test_a_second_read_forgets_a_role_withdrawn_since(users, catalog):
    bob = users["bob"]
    staging = catalog.environments.get(slug="staging")
    assert staging.pk in visible_environment_ids(bob)
    assert has_role(bob, staging, Role.APPROVER)

    Membership.objects.filter(user=bob, environment=staging).delete()

    assert staging.pk not in visible_environment_ids(bob)  # the same user object
    assert not has_role(bob, staging, Role.APPROVER)


def test_an_inactive_account_sees_nothing(users, catalog):
    bob = users["bob"]
    bob.is_active = False

    assert visible_environment_ids(bob) == []
    assert not has_role(bob, catalog.environments.get(slug="staging"), Role.VIEWER)
