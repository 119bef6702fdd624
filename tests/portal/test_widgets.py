"""QuickSelect prints what Django's Select template prints, character for character."""

from django import forms
from django.utils.safestring import mark_safe
from hypothesis import given, settings
from hypothesis import strategies as st

from environments.models import Environment
from portal.core.widgets import QuickSelect
from tests.strategies import any_text

nasty = any_text(max_size=20)
values = st.one_of(nasty, st.integers(-5, 10**6))
flat = st.lists(st.tuples(values, nasty), max_size=6)
grouped = st.lists(st.tuples(nasty, flat), max_size=3)
attrs = st.dictionaries(
    st.sampled_from(["id", "class", "data-x", "required", "disabled", "title"]),
    st.one_of(st.booleans(), nasty, st.integers(0, 9), nasty.map(mark_safe)),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    choices=st.one_of(flat, grouped),
    name=nasty,
    value=st.one_of(st.none(), values, st.lists(values, max_size=2)),
    attrs=attrs,
    widget_attrs=attrs,
)
def test_it_prints_what_the_select_template_prints(choices, name, value, attrs, widget_attrs):
    expected = forms.Select(attrs=widget_attrs, choices=choices).render(name, value, attrs)
    assert QuickSelect(attrs=widget_attrs, choices=choices).render(name, value, attrs) == expected


def test_a_model_choice_field_renders_the_same(catalog):
    """As the deployment list's environment filter uses it: options from a query."""

    field = forms.ModelChoiceField(queryset=Environment.objects.all(), empty_label="Any")
    quick = forms.ModelChoiceField(
        queryset=Environment.objects.all(), empty_label="Any", widget=QuickSelect
    )
    for widget_field in (field, quick):
        widget_field.widget.choices = widget_field.choices
    printed = quick.widget.render("environment", Environment.objects.first().pk)
    assert printed == field.widget.render("environment", Environment.objects.first().pk)
    assert printed.count("<option") == Environment.objects.count() + 1 > 2
    assert printed.count(" selected>") == 1
