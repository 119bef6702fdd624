"""The `local` filter prints what Django's `date` filter printed in the lists
it replaced there, in the portal's time zone, summer and winter."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.template import Context, Template
from django.utils import timezone

# (strftime format for `local`, the `date` format it replaces)
FORMATS = [("%Y-%m-%d %H:%M", "Y-m-d H:i"), ("%Y-%m-%d %H:%M:%S %Z", "Y-m-d H:i:s T"), ("c", "c")]
MOMENTS = [
    datetime(2026, 1, 15, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 7, 1, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 30, tzinfo=UTC),  # the hour Toronto moves its clocks
    datetime(1, 1, 1, 12, tzinfo=UTC),
]


@pytest.mark.parametrize("zone", ["UTC", "America/Toronto", "Asia/Kolkata"])
@pytest.mark.parametrize(("fmt", "date_fmt"), FORMATS)
def test_it_prints_what_the_date_filter_printed(zone, fmt, date_fmt):
    ours = Template(f'{{{{ at|local:"{fmt}" }}}}')
    django_s = Template(f'{{{{ at|date:"{date_fmt}" }}}}')
    with timezone.override(zone):
        for at in MOMENTS:
            context = Context({"at": at})
            assert ours.render(context) == django_s.render(context), at


@pytest.mark.parametrize("value", [None, "", "not a date", 0])
def test_anything_but_a_moment_prints_nothing(value):
    assert Template('{{ at|local:"%Y-%m-%d" }}').render(Context({"at": value})) == ""


def test_a_plain_date_prints_as_it_is():
    assert (
        Template('{{ d|local:"%Y-%m-%d" }}').render(Context({"d": date(2026, 2, 3)}))
        == "2026-02-03"
    )
