"""Form widgets printed in Python where Django's templates cost too much.

Django renders a <select> through a template that includes another template
per option and a third per attribute list. The deployment list's environment
filter has an option per environment (50 in the benchmark's catalog), and
printing it took ~6 ms, 40 % of that page's server time. `QuickSelect` prints
the same markup, character for character (tests/portal/test_widgets.py), in
a fraction of that.
"""

from __future__ import annotations

from django import forms
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe


def _text(value) -> str:
    """`{{ value|stringformat:'s' }}` under autoescape: str(), escaped unless already safe."""
    return conditional_escape(value if isinstance(value, SafeString) else str(value))


def _attrs(attrs: dict) -> str:
    """django/forms/widgets/attrs.html: ` name="value"`, ` name` for True, nothing for False."""
    return "".join(
        f" {conditional_escape(name)}" + ("" if value is True else f'="{_text(value)}"')
        for name, value in attrs.items()
        if value is not False
    )


class QuickSelect(forms.Select):
    """A Select whose markup is built here, not by the widget templates."""

    def render(self, name, value, attrs=None, renderer=None) -> SafeString:
        widget = self.get_context(name, value, attrs)["widget"]
        parts = [f'<select name="{conditional_escape(widget["name"])}"{_attrs(widget["attrs"])}>']
        # Each option ends with a newline: the option template's last line.
        for group_name, options, _index in widget["optgroups"]:
            if group_name:
                parts.append(f'\n  <optgroup label="{conditional_escape(group_name)}">')
            parts.extend(
                f'\n  <option value="{_text(option["value"])}"{_attrs(option["attrs"])}>'
                f"{conditional_escape(option['label'])}</option>\n"
                for option in options
            )
            if group_name:
                parts.append("\n  </optgroup>")
        parts.append("\n</select>")
        return mark_safe("".join(parts))  # noqa: S308 - every value above is escaped
