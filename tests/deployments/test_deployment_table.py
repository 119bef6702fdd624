"""A deployment table's rows are built in Python (deployments/templatetags/
deployment_tables.py); what they print is what the template printed, value
for value, escaping included."""

from datetime import UTC, datetime

from django.contrib.auth.models import User
from django.template import Context, Template
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.choices import STATUS_COLOURS, Kind, Status
from deployments.models import Artifact, Deployment, Release
from environments.models import Application, Environment, Service
from tests.strategies import any_text

# The rows as templates/deployments/_deployment_table.html wrote them before.
ROW_TEMPLATE = Template(
    "{% for deployment in deployments %}<tr>"
    "<td><a href=\"{% url 'deployment-detail' deployment.pk %}\">#{{ deployment.pk }}</a></td>"
    "<td>{% if show_environment %}{{ deployment.environment.application.slug }} {% endif %}"
    "<strong>{{ deployment.release.version }}</strong></td>"
    "{% if show_environment %}<td>{{ deployment.environment.name }}</td>{% endif %}"
    "<td>{{ deployment.get_kind_display }}</td>"
    '<td><span class="badge badge-{{ deployment.status_colour }}">'
    "{{ deployment.get_status_display }}</span></td>"
    '<td>{{ deployment.requested_by.get_username|default:"Gantry (automatic)" }}</td>'
    '<td>{{ deployment.created_at|local:"%Y-%m-%d %H:%M" }}</td>'
    "</tr>{% endfor %}"
)
ROWS = Template("{% load deployment_tables %}{{ deployments|deployment_rows:show_environment }}")

nasty = any_text(max_size=40)


@st.composite
def deployments(draw):
    app = Application(slug=draw(st.sampled_from(["payments-api", "a<b"])))
    env = Environment(name=draw(nasty), slug="production", application=app)
    requester = draw(st.sampled_from([None, "alice", "o'brien<&>", ""]))
    deployment = Deployment(
        pk=draw(st.integers(1, 10**12)),
        environment=env,
        release=Release(version=draw(nasty), application=app),
        kind=draw(st.sampled_from(Kind.values)),
        status=draw(st.sampled_from(Status.values)),
        requested_by=None if requester is None else User(pk=1, username=requester),
        created_at=draw(st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC))),
    )
    if draw(st.booleans()):  # the views colour the badge; a table without it prints none
        deployment.status_colour = STATUS_COLOURS[deployment.status]
    return deployment


@settings(max_examples=200, deadline=None)
@given(
    st.lists(deployments(), max_size=3),
    st.booleans(),
    st.sampled_from(["UTC", "America/Toronto", "Asia/Kolkata"]),
)
def test_rows_print_what_the_template_printed(page, show_environment, zone):
    context = {"deployments": page, "show_environment": show_environment}
    with timezone.override(zone):
        assert ROWS.render(Context(context)) == ROW_TEMPLATE.render(Context(context))


# The release list's rows as templates/deployments/release_list.html wrote them before.
RELEASE_ROW_TEMPLATE = Template(
    "{% for release in releases %}<tr>"
    "<td><a href=\"{% url 'release-detail' release.pk %}\"><strong>{{ release.version }}"
    "</strong></a></td>"
    "<td>{% if release.commit %}<code>{{ release.commit|truncatechars:11 }}</code>{% endif %}</td>"
    "<td><small>{% for artifact in release.artifacts.all %}{{ artifact.service.slug }}"
    "{% if not forloop.last %}, {% endif %}{% endfor %}</small></td>"
    "<td>{{ release.notes|truncatechars:80 }}</td>"
    "<td>{{ release.created_by.get_username }}</td>"
    '<td>{{ release.created_at|local:"%Y-%m-%d %H:%M" }}</td>'
    "</tr>{% endfor %}"
)
RELEASE_ROWS = Template("{% load deployment_tables %}{{ releases|release_rows }}")


@st.composite
def releases(draw):
    registrar = draw(st.sampled_from([None, "alice", "o'brien<&>"]))
    release = Release(
        pk=draw(st.integers(1, 10**12)),
        version=draw(nasty),
        commit=draw(st.sampled_from(["", "3f9c2ab", "0123456789abcdef<>"])),
        notes=draw(st.text(max_size=120)),
        created_by=None if registrar is None else User(pk=1, username=registrar),
        created_at=draw(st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC))),
    )
    slugs = draw(st.lists(st.sampled_from(["fraud-api", "fraud-ml", "a&b"]), max_size=3))
    # As artifacts_with_services() leaves them: read from the prefetch, no query.
    release._prefetched_objects_cache = {
        "artifacts": [Artifact(service=Service(slug=slug)) for slug in slugs]
    }
    return release


@settings(max_examples=200, deadline=None)
@given(st.lists(releases(), max_size=3), st.sampled_from(["UTC", "Asia/Kolkata"]))
def test_release_rows_print_what_the_template_printed(page, zone):
    with timezone.override(zone):
        expected = RELEASE_ROW_TEMPLATE.render(Context({"releases": page}))
        assert RELEASE_ROWS.render(Context({"releases": page})) == expected
