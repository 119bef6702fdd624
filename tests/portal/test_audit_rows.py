"""The audit page's rows are built in Python (portal/audit_rows.py); what they
print is what the template printed, value for value, escaping included."""

from datetime import UTC, datetime

from django.template import Context, Template
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from environments.models import Application, Environment
from portal.audit_rows import audit_rows, compact
from portal.core.models import AuditEvent
from tests.strategies import any_text

# The row as templates/portal/audit_list.html wrote it before rows were built in Python.
ROW_TEMPLATE = Template(
    '{% for event in events %}<tr data-seq="{{ event.seq }}"><td>{{ event.seq }}</td>'
    '<td><time datetime="{{ event.at|local:\'c\' }}">{{ event.at|local:"%Y-%m-%d %H:%M:%S %Z" }}'
    "</time></td><td>{{ event.actor_name }}</td><td><code>{{ event.action }}</code></td>"
    "<td>{{ event.target_repr }}</td>"
    "<td>{% if event.environment %}{{ event.environment.application.slug }}/"
    "{{ event.environment.slug }}{% elif event.application %}{{ event.application.slug }}"
    '{% endif %}</td><td>{{ event.ip|default:"" }}</td>'
    '<td><code class="request-id" title="{{ event.request_id }}">'
    "{{ event.request_id|truncatechars:9 }}</code></td>"
    '<td class="change">{% if event.before_text or event.after_text %}<details><summary>'
    "{% if event.before_text %}<code>{{ event.before_text|truncatechars:40 }}</code> → "
    '{% endif %}<code>{{ event.after_text|default:"∅"|truncatechars:60 }}</code></summary>'
    "{% if event.before_text %}<p>Before:</p><pre>{{ event.before_text }}</pre>{% endif %}"
    '<p>After:</p><pre>{{ event.after_text|default:"∅" }}</pre></details>{% endif %}'
    "</td></tr>{% endfor %}"
)

nasty = any_text(max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | nasty,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def events(draw):
    app = Application(slug=draw(st.sampled_from(["payments-api", "a<b", "o'k&co"])))
    env = Environment(slug=draw(st.sampled_from(["production", 'st"g'])), application=app)
    where = draw(st.sampled_from(["environment", "application", "neither"]))
    return AuditEvent(
        seq=draw(st.integers(1, 10**12)),
        at=draw(st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC))),
        actor_name=draw(nasty),
        action=draw(nasty),
        target_repr=draw(nasty),
        environment=env if where == "environment" else None,
        application=app if where != "neither" else None,
        ip=draw(st.sampled_from([None, "10.0.0.7", "2001:db8::1"])),
        request_id=draw(nasty),
        before=draw(json_values),
        after=draw(json_values),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), max_size=3), st.sampled_from(["UTC", "America/Toronto", "Asia/Kolkata"]))
def test_rows_print_what_the_template_printed(page, zone):
    for event in page:
        event.before_text, event.after_text = compact(event.before), compact(event.after)
    with timezone.override(zone):
        expected = ROW_TEMPLATE.render(Context({"events": page}))
        assert str(audit_rows(page)) == expected


def test_a_row_escapes_what_it_prints():
    event = AuditEvent(
        seq=7, at=datetime(2026, 7, 1, 12, tzinfo=UTC), actor_name="<script>x</script>",
        action='deployment."approved"', target_repr="a & b", request_id="<b>", after={"k": "<i>"},
    )  # fmt: skip
    row = str(audit_rows([event]))
    assert "<script>" not in row and "<b>" not in row and "<i>" not in row
    assert "&lt;script&gt;x&lt;/script&gt;" in row and "a &amp; b" in row
