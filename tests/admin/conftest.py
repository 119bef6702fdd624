"""Helpers for driving the real admin forms: read a page's form, change a few
fields, post it back, exactly as a browser would."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.forms import MultiWidget


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery")


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client


def _field_value(bound_field):
    value = bound_field.value()
    if value is None or value is False:
        return None
    if value is True:
        return "on"
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return str(value)


def _form_data(form, data: dict) -> None:
    for name, field in form.fields.items():
        if isinstance(field.widget, MultiWidget):  # e.g. a split date and time
            parts = field.widget.decompress(form[name].value())
            for index, part in enumerate(parts):
                if part is not None:
                    data[f"{form.add_prefix(name)}_{index}"] = str(part)
            continue
        value = _field_value(form[name])
        if value is not None:
            data[form.add_prefix(name)] = value


def admin_form_data(response) -> dict:
    """The POST a browser would send for an admin add/change page, unchanged."""
    data: dict = {}
    _form_data(response.context["adminform"].form, data)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        _form_data(formset.management_form, data)
        for form in formset.forms:
            _form_data(form, data)
    return data
