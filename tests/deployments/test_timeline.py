"""The deployment timeline: requested → planned → approvals → queued → started →
steps → bake → result, with actors and durations, on the deployment page."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from deployments.choices import Status, StepStatus
from deployments.models import Deployment, StepRun
from deployments.timeline import (
    LABELS,
    KeptTimelines,
    TimelineEntry,
    build_timeline,
    deployment_events,
    format_duration,
)
from portal.core import audit
from portal.core.models import AuditEvent
from tests.deployments.history import shipped
from tests.environments.ui import browser
from tests.strategies import run_machine


@pytest.fixture
def deployment(release, users):
    return shipped(release, users)


def timeline_of(deployment):
    return build_timeline(deployment, deployment.step_runs.all())


def test_it_orders_the_life_of_a_deployment(deployment):
    labels = [entry.label for entry in timeline_of(deployment)]
    assert labels == [
        "Requested",
        "Plan 1: Terraform",
        "Planned",
        "Awaiting approval",
        "Approved",
        "Approved",
        "Queued",
        "Started",
        "Step 1: Terraform",
        "Step 2: Rolling update",
        "Bake: Bake",
        "Succeeded",
    ]


def test_it_names_the_actors(deployment):
    actors = {(entry.label, entry.actor) for entry in timeline_of(deployment)}
    assert ("Requested", "alice") in actors
    assert ("Approved", "bob") in actors
    assert ("Approved", "carol") in actors
    assert ("Step 2: Rolling update", "gantry") in actors


def test_it_measures_steps_and_the_gaps_between_entries(deployment):
    timeline = timeline_of(deployment)
    durations = {entry.label: entry.duration for entry in timeline if entry.duration}
    assert durations == {
        "Plan 1: Terraform": timedelta(seconds=4),
        "Step 1: Terraform": timedelta(milliseconds=10),
        "Step 2: Rolling update": timedelta(milliseconds=20),
        "Bake: Bake": timedelta(milliseconds=30),
    }
    assert timeline[0].since_previous is None
    for previous, entry in zip(timeline, timeline[1:], strict=False):
        assert entry.since_previous == entry.at - previous.at
        assert entry.since_previous >= timedelta(0)


def test_it_points_each_event_at_its_place_in_the_chain(deployment):
    approved = [e for e in timeline_of(deployment) if e.action == "deployment.approved"]
    expected = AuditEvent.objects.filter(
        action="deployment.approved", target_id=str(deployment.pk)
    ).order_by("seq")
    assert [e.seq for e in approved] == [e.seq for e in expected]
    assert approved[0].detail == "1 of 2 approvals"


def test_it_shows_a_failed_step_with_its_error(deployment):
    StepRun.objects.filter(deployment=deployment, phase="deploy", order=3).update(
        status=StepStatus.FAILED, error="HighErrorRate is in ALARM"
    )
    bake = next(e for e in timeline_of(deployment) if e.label == "Bake: Bake")
    assert bake.colour == "red"
    assert bake.detail == "failed: HighErrorRate is in ALARM"


def test_it_costs_one_query_however_long_the_history(deployment):
    for order in range(4, 40):
        StepRun.objects.create(
            deployment=deployment, phase="deploy", order=order, name="check", kind="http_check",
            status=StepStatus.SUCCEEDED, started_at=deployment.finished_at,
            finished_at=deployment.finished_at,
        )  # fmt: skip
    step_runs = list(deployment.step_runs.all())
    with CaptureQueriesContext(connection) as queries:
        entries = build_timeline(deployment, step_runs)
    assert len(queries) == 1  # the audit events; the caller's step runs are not read again
    assert len(entries) == 12 + 36


def test_it_reads_the_events_of_one_deployment_through_the_target_index(deployment):
    with connection.cursor() as cursor:
        # A test table is small enough to read whole; ask what a large one would get.
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = deployment_events(deployment).explain()
    assert "auditevent_target" in plan, plan


def test_the_page_and_the_evidence_cost_the_same_however_busy_the_environment(
    deployment, release, users
):
    client = browser(users["dave"])
    page = reverse("deployment-detail", args=[deployment.pk])
    pack = reverse("deployment-evidence-json", args=[deployment.pk])

    def queries(url: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return [query["sql"] for query in captured.captured_queries]

    quiet = queries(page), queries(pack)
    for n in range(3):
        other = Deployment.objects.create(
            release=release, environment=deployment.environment, reason=f"other {n}",
            status=Status.CANCELLED, requested_by=users["alice"],
        )  # fmt: skip
        for _ in range(10):
            audit.record("deployment.cancel_requested", other, actor=users["alice"])
    busy = queries(page), queries(pack)
    assert [len(q) for q in busy] == [len(q) for q in quiet]
    # The page reads its step runs once and joins the cost estimate to the deployment.
    assert sum('FROM "deployments_steprun"' in sql for sql in busy[0]) == 1
    assert not any('FROM "deployments_costestimate"' in sql for sql in busy[0])


def test_it_ignores_events_of_other_deployments(deployment, release, users):
    from deployments.models import Deployment
    from tests.conftest import env

    other = Deployment.request(release, env(release.application, "dev"), users["alice"], "dev too")
    assert {e.seq for e in timeline_of(deployment)}.isdisjoint(
        {e.seq for e in timeline_of(other)} - {None}
    )
    assert [e.label for e in timeline_of(other)] == ["Requested"]


def test_the_deployment_page_shows_the_timeline(deployment, users):
    response = browser(users["dave"]).get(reverse("deployment-detail", args=[deployment.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="timeline"' in html
    assert html.count('data-testid="timeline-label"') == 12
    assert "by carol" in html
    assert "0.0 s" in html  # the millisecond steps
    assert reverse("deployment-evidence-html", args=[deployment.pk]) in html
    assert reverse("deployment-evidence-json", args=[deployment.pk]) in html


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=4.25), "4.2 s"),
        (timedelta(seconds=185), "3 min 05 s"),
        (timedelta(hours=1, minutes=2), "1 h 02 min"),
        (timedelta(days=3, hours=5), "3 d 5 h"),
        (None, ""),
    ],
)
def test_it_formats_durations(span, text):
    assert format_duration(span) == text


@pytest.mark.parametrize("zone", ["UTC", "America/Toronto"])
def test_times_read_as_the_date_filter_would_print_them(zone):
    """The timeline formats its times itself (it has a hundred of them); what
    it prints is what `date:"Y-m-d H:i:s T"` prints, in the portal's zone."""
    printed = Template('{{ at|date:"Y-m-d H:i:s T" }}')
    with timezone.override(zone):
        for at in (datetime(2026, 1, 15, 3, 4, tzinfo=UTC), datetime(2026, 7, 1, 23, tzinfo=UTC)):
            expected = printed.render(Context({"at": at}))
            assert TimelineEntry(at=at, label="x").at_text == expected
    assert expected.endswith("EDT" if zone == "America/Toronto" else "UTC")


# The entry's markup as the template wrote it before entries rendered themselves.
ENTRY_TEMPLATE = Template(
    '<li class="timeline-entry timeline-{{ entry.colour }}" data-action="{{ entry.action }}">'
    '{% if entry.since_previous_text %}<div class="timeline-gap" data-testid="timeline-gap">'
    "+{{ entry.since_previous_text }}</div>{% endif %}"
    '<time datetime="{{ entry.at.isoformat }}">{{ entry.at_text }}</time> '
    '<strong data-testid="timeline-label">{{ entry.label }}</strong>'
    '{% if entry.actor %} <span class="muted">by {{ entry.actor }}</span>{% endif %}'
    '{% if entry.duration_text %} <span class="badge badge-grey" title="How long the step ran">'
    "{{ entry.duration_text }}</span>{% endif %}"
    "{% if entry.detail %} <div><small>{{ entry.detail }}</small></div>{% endif %}"
    '{% if entry.seq %} <small class="muted" title="Position in the audit chain">'
    "event #{{ entry.seq }}</small>{% endif %}</li>"
)


@pytest.mark.parametrize(
    "entry",
    [
        TimelineEntry(at=datetime(2026, 3, 1, 9, tzinfo=UTC), label="Requested"),
        TimelineEntry(
            at=datetime(2026, 3, 1, 9, 0, 1, 250000, tzinfo=UTC),
            label='Step 1: <script>alert("x")</script>',
            actor="o'brien & co",
            detail='failed: "quoted" <b>error</b>',
            colour="red",
            action='step."terraform"',
            seq=42,
            duration=timedelta(0),
            since_previous=timedelta(seconds=1.25),
        ),
        TimelineEntry(
            at=datetime(2026, 3, 1, 10, tzinfo=UTC),
            label="Bake: alarms",
            duration=timedelta(minutes=5, seconds=3),
            since_previous=timedelta(hours=1),
        ),
    ],
)
def test_an_entry_renders_as_the_template_did(entry):
    """Entries render themselves (the timeline's hundred entries through the
    template engine were the page's slowest part); the markup and its escaping
    are the template's, value for value."""
    with timezone.override("America/Toronto"):
        expected = ENTRY_TEMPLATE.render(Context({"entry": entry}))
        assert Template("{{ entry }}").render(Context({"entry": entry})) == expected
    assert "<script>" not in expected and "<b>" not in expected


# The page keeps each deployment's rendered timeline (KeptTimelines) and reads
# only the events appended since: whatever happens between two requests, the
# timeline shown is the one read afresh.


def rendered(deployment) -> str:
    """The timeline's markup read afresh, as the template rendered it entry by entry."""
    return "".join(map(str, timeline_of(deployment)))


def test_a_kept_timeline_shows_what_happened_since(deployment, users):
    kept = KeptTimelines()
    first = kept.html(deployment, list(deployment.step_runs.all()))
    assert first == rendered(deployment)
    audit.record("evidence.exported", deployment, actor=users["dave"], after={"format": "json"})
    second = kept.html(deployment, list(deployment.step_runs.all()))
    assert second == rendered(deployment) != first
    assert "Evidence pack exported" in second and "Evidence pack exported" not in first
    StepRun.objects.filter(deployment=deployment, phase="deploy", order=3).update(
        status=StepStatus.FAILED, error="HighErrorRate is in ALARM"
    )
    third = kept.html(deployment, list(deployment.step_runs.all()))
    assert third == rendered(deployment)
    assert "failed: HighErrorRate is in ALARM" in third


def test_a_kept_timeline_reads_one_event_when_nothing_happened(deployment):
    kept = KeptTimelines()
    steps = list(deployment.step_runs.all())
    kept.html(deployment, steps)
    with CaptureQueriesContext(connection) as queries:
        again = kept.html(deployment, steps)
    assert again == rendered(deployment)
    assert len(queries) == 1
    assert '"portal_auditevent"."seq" >=' in queries[0]["sql"]


def test_a_kept_timeline_forgets_events_rolled_back(deployment, users):
    """The events after the last one kept are read by number; a number reused
    by another event (its first append rolled back, a database restored) is
    caught by the chain hash, and the timeline is read again whole."""
    kept = KeptTimelines()
    steps = list(deployment.step_runs.all())
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record("deployment.cancel_requested", deployment, actor=users["alice"])
        assert "Cancel requested" in kept.html(deployment, steps)
        raise RuntimeError("roll back")
    # The rolled-back event's number goes to another event of this deployment.
    audit.record("evidence.exported", deployment, actor=users["dave"], after={"format": "html"})
    html = kept.html(deployment, steps)
    assert "Cancel requested" not in html and "Evidence pack exported" in html
    assert html == rendered(deployment)


def test_a_kept_timeline_is_printed_in_the_current_time_zone(deployment):
    kept = KeptTimelines()
    steps = list(deployment.step_runs.all())
    for zone in ("UTC", "America/Toronto", "UTC"):
        with timezone.override(zone):
            assert kept.html(deployment, steps) == rendered(deployment)


class KeptTimelineSequences(RuleBasedStateMachine):
    """Events appended (some rolled back), steps moving, time zones switched
    and two deployments' pages shown in any order through a store that keeps
    one timeline: every page shows exactly the timeline read afresh."""

    world: dict = {}  # set by the test: the two deployments and a user
    # What an event's comment or a step's error may hold: markup to escape, and an accent.
    text = st.text(alphabet="ab <>&\"'é", max_size=8)

    def __init__(self) -> None:
        super().__init__()
        self.kept = KeptTimelines(size=1)
        self.zone = "UTC"

    @rule(which=st.integers(0, 1), action=st.sampled_from(sorted(LABELS)), comment=text)
    def append(self, which, action, comment):
        audit.record(action, self.world["deployments"][which], actor=self.world["user"],
                     after={"comment": comment, "format": "json"})  # fmt: skip

    @rule(which=st.integers(0, 1), action=st.sampled_from(sorted(LABELS)))
    def append_rolled_back(self, which, action):
        deployment = self.world["deployments"][which]
        with contextlib.suppress(RuntimeError), transaction.atomic():
            audit.record(action, deployment, actor=self.world["user"])
            self.show(which)  # the page may be shown while the transaction is open
            raise RuntimeError("roll back")

    @rule(which=st.integers(0, 1), step=st.integers(0, 3),
          status=st.sampled_from(StepStatus.values), error=text)  # fmt: skip
    def move_a_step(self, which, step, status, error):
        deployment = self.world["deployments"][which]
        runs = list(deployment.step_runs.order_by("pk"))
        run = runs[step % len(runs)]
        run.status, run.error = status, error
        run.finished_at = (run.started_at or timezone.now()) + timedelta(seconds=len(error))
        run.save()

    @rule(zone=st.sampled_from(["UTC", "America/Toronto", "Asia/Kolkata"]))
    def switch_zone(self, zone):
        self.zone = zone

    @rule(which=st.integers(0, 1))
    def show(self, which):
        deployment = self.world["deployments"][which]
        with timezone.override(self.zone):
            assert self.kept.html(deployment, list(deployment.step_runs.all())) == rendered(
                deployment
            )


def test_kept_timelines_under_random_sequences(deployment, release, users):
    from tests.conftest import env

    other = Deployment.request(release, env(release.application, "dev"), users["alice"], "dev too")
    StepRun.objects.create(
        deployment=other, phase="deploy", order=1, name="Rolling update", kind="ecs_rolling",
        status=StepStatus.RUNNING, started_at=timezone.now(),
    )  # fmt: skip
    KeptTimelineSequences.world = {"deployments": [deployment, other], "user": users["dave"]}
    run_machine(KeptTimelineSequences, examples=25, steps=12)
