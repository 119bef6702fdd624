"""Freeze windows: one-off and weekly, across the week's end and time zones,
and the break-glass override that needs a second person."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from deployments.models import Deployment
from environments.choices import FreezeKind, OverrideStatus
from environments.models import FreezeOverride, FreezeWindow
from portal.core.models import AuditEvent
from portal.core.roles import Forbidden, PolicyError
from tests.conftest import env

TORONTO = "America/Toronto"


def weekly(start_day, start, end_day, end, tz="UTC") -> FreezeWindow:
    return FreezeWindow(
        kind=FreezeKind.WEEKLY, reason="weekend", start_weekday=start_day,
        start_time=start, end_weekday=end_day, end_time=end, time_zone=tz,
    )  # fmt: skip


def at(text: str, tz=UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def test_it_covers_a_window_wrapping_over_the_end_of_the_week():
    # Friday 18:00 → Monday 06:00. 2026-11-20 is a Friday.
    window = weekly(4, time(18), 0, time(6))
    assert window.active_until(at("2026-11-20T17:59")) is None
    assert window.active_until(at("2026-11-20T18:00")) == at("2026-11-23T06:00")
    assert window.active_until(at("2026-11-22T23:59")) == at("2026-11-23T06:00")
    assert window.active_until(at("2026-11-23T05:59")) == at("2026-11-23T06:00")
    assert window.active_until(at("2026-11-23T06:00")) is None
    assert window.active_until(at("2026-11-25T12:00")) is None


def test_it_covers_a_window_from_sunday_night_into_monday():
    window = weekly(6, time(22), 0, time(2))
    assert window.active_until(at("2026-11-22T23:30")) == at("2026-11-23T02:00")
    assert window.active_until(at("2026-11-23T01:00")) == at("2026-11-23T02:00")
    assert window.active_until(at("2026-11-23T03:00")) is None


def test_it_reads_weekly_windows_in_their_own_time_zone():
    # Friday 16:00 → Monday 08:00 in Toronto (UTC-5 in November).
    window = weekly(4, time(16), 0, time(8), tz=TORONTO)
    assert window.active_until(at("2026-11-20T20:59")) is None  # 15:59 in Toronto
    until = window.active_until(at("2026-11-20T21:00"))  # 16:00 in Toronto
    assert until == at("2026-11-23T13:00")
    assert until.utcoffset() == timedelta(hours=-5)


def test_it_follows_daylight_saving_changes():
    # 2026-03-08 02:00 Toronto clocks go forward; the window ends Monday 08:00 EDT (12:00 UTC).
    window = weekly(4, time(16), 0, time(8), tz=TORONTO)
    assert window.active_until(at("2026-03-07T12:00")) == at("2026-03-09T12:00")


def test_it_covers_a_one_off_window_half_open():
    window = FreezeWindow(
        kind=FreezeKind.ONE_OFF, reason="year end",
        starts_at=at("2026-12-24T00:00"), ends_at=at("2027-01-02T00:00"),
    )  # fmt: skip
    assert window.active_until(at("2026-12-23T23:59")) is None
    assert window.active_until(at("2026-12-31T12:00")) == at("2027-01-02T00:00")
    assert window.active_until(at("2027-01-02T00:00")) is None


def test_it_validates_windows_naming_the_field():
    with pytest.raises(ValidationError) as excinfo:
        FreezeWindow(kind=FreezeKind.ONE_OFF, reason="x", starts_at=at("2026-01-02T00:00"),
                     ends_at=at("2026-01-01T00:00")).clean()  # fmt: skip
    assert "ends_at" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        weekly(4, time(16), 9, time(8), tz="Mars/Olympus").clean()
    assert {"end_weekday", "time_zone"} <= set(excinfo.value.message_dict)


@pytest.fixture
def frozen_staging(catalog):
    staging = env(catalog, "staging")
    now = timezone.now()
    FreezeWindow.objects.create(environment=staging, kind=FreezeKind.ONE_OFF,
                                reason="quarter close", starts_at=now - timedelta(hours=1),
                                ends_at=now + timedelta(hours=5))  # fmt: skip
    return staging


def test_it_refuses_requests_during_a_freeze_saying_until_when(frozen_staging, release, users):
    with pytest.raises(PolicyError, match=r"frozen until .* \(quarter close\)") as excinfo:
        Deployment.request(release, frozen_staging, users["alice"], "fix")
    assert excinfo.value.field == "environment"
    assert not Deployment.objects.exists()


def test_break_glass_needs_an_admin_a_reason_and_a_second_person(frozen_staging, release, users):
    with pytest.raises(PolicyError):
        FreezeOverride.request(frozen_staging, users["alice"], "urgent", timedelta(hours=1))
    with pytest.raises(PolicyError, match="reason"):
        FreezeOverride.request(frozen_staging, users["erin"], "  ", timedelta(hours=1))
    override = FreezeOverride.request(
        frozen_staging, users["erin"], "CVE-2026-1234 hotfix", timedelta(hours=1)
    )
    # Pending: the freeze still holds.
    with pytest.raises(PolicyError, match="frozen"):
        Deployment.request(release, frozen_staging, users["alice"], "hotfix")
    with pytest.raises(PolicyError, match="second person"):
        override.approve(users["erin"])
    with pytest.raises(PolicyError):
        override.approve(users["dave"])
    override.approve(users["bob"])
    assert override.status == OverrideStatus.ACTIVE
    deployment = Deployment.request(release, frozen_staging, users["alice"], "hotfix")
    assert deployment.freeze_override == override
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"freeze_override.requested", "freeze_override.approved"} <= actions


def test_break_glass_expires(frozen_staging, release, users):
    override = FreezeOverride.request(frozen_staging, users["erin"], "hotfix", timedelta(hours=1))
    override.approve(users["carol"])
    FreezeOverride.objects.filter(pk=override.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(PolicyError, match="frozen"):
        Deployment.request(release, frozen_staging, users["alice"], "hotfix")


def test_a_decided_override_cannot_be_decided_again(frozen_staging, users):
    override = FreezeOverride.request(frozen_staging, users["erin"], "hotfix", timedelta(hours=1))
    override.reject(users["bob"])
    with pytest.raises(PolicyError, match="already decided"):
        FreezeOverride.objects.get(pk=override.pk).approve(users["carol"])


def test_forbidden_is_a_policy_error():
    assert issubclass(Forbidden, PolicyError)
