"""`{{ value|local:"%Y-%m-%d %H:%M" }}`: a moment in the portal's time zone,
formatted by strftime.

The lists (audit trail, deployments, releases) print two or three times per
row; Django's `date` filter formats each character in Python and cost about a
third of a 25-row table. This prints the same text for the formats the
templates use ("%Y-%m-%d %H:%M:%S %Z" is `date:"Y-m-d H:i:s T"`; "c" is
`date:"c"`), tested against `date` in tests/portal/test_local_time.py.
Loaded for every template (TEMPLATES builtins in settings).
"""

from __future__ import annotations

from datetime import date, datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter(expects_localtime=True)
def local(value, fmt: str) -> str:
    """ "" for anything but a date (None, a blank value), as `date` prints."""
    if not isinstance(value, date):
        return ""
    if fmt == "c":
        return value.isoformat()
    if isinstance(value, datetime) and timezone.is_aware(value):
        value = timezone.localtime(value)
    if value.year < 1000:  # strftime writes year 1 as "1"; `date` as "0001"
        fmt = fmt.replace("%Y", f"{value.year:04d}")
    return value.strftime(fmt)
