"""Forms of the catalog pages: break-glass requests and decisions."""

from __future__ import annotations

from datetime import timedelta

from django import forms


class BreakGlassForm(forms.Form):
    """An admin asks to lift a freeze for a while; a second person must agree."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Why the freeze must be lifted now (incident, ticket). Everyone will see it.",
    )
    duration_minutes = forms.IntegerField(
        label="Duration (minutes)",
        min_value=5,
        max_value=24 * 60,
        initial=60,
        help_text="Between 5 minutes and 24 hours, counted from the second approval.",
    )

    def duration(self) -> timedelta:
        return timedelta(minutes=self.cleaned_data["duration_minutes"])


class OverrideDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
