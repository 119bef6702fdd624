"""Forms of the release and deployment pages.

The rules live on the models (`Release.register`, `Deployment.request`); these
forms only shape the input and put the models' errors next to the field they
name.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from deployments.choices import Status
from deployments.models.release import NOTES_MAX, Release
from environments.models import Service
from portal.core.roles import PolicyError
from portal.core.widgets import QuickSelect

ARTIFACT_PREFIX = "artifact_"


class PolicyErrorMixin:
    """Show a model's PolicyError on the form field it names (or above the form)."""

    # Model field names that the form calls differently.
    field_names: dict[str, str] = {}

    def add_policy_error(self, exc: PolicyError) -> None:
        name = exc.field or ""
        if name.startswith("artifacts."):
            name = ARTIFACT_PREFIX + name.removeprefix("artifacts.")
        name = self.field_names.get(name, name)
        self.add_error(name if name in self.fields else None, exc.message)


class ReleaseForm(PolicyErrorMixin, forms.Form):
    """A new release: a version and one image pinned by digest per service."""

    version = forms.CharField(max_length=64, widget=forms.TextInput(attrs={"placeholder": "1.4.0"}))
    commit = forms.CharField(
        max_length=40, required=False, help_text="The source commit (7 to 40 hex digits)."
    )
    commit_author = forms.CharField(
        max_length=254,
        required=False,
        help_text="Who wrote the commit (“Name <email>”, an e-mail or a Gantry user name); "
        "where implementers may not approve, that user may not approve it.",
    )
    notes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=NOTES_MAX,
        help_text=f"What changed, for approvers and auditors ({NOTES_MAX:,} characters at most).",
    )  # fmt: skip

    def __init__(self, *args, services: list[Service], application=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.services = services
        self.application = application
        for service in services:
            repository = (service.image_repositories or ["repository"])[0]
            self.fields[ARTIFACT_PREFIX + service.slug] = forms.CharField(
                label=f"{service.name} image",
                max_length=300,
                help_text=f"Pinned by digest: {repository}@sha256:<64 hex digits>, or a tag "
                f"({repository}:1.4.0) resolved to its digest through the registry",
                widget=forms.TextInput(attrs={"class": "mono", "spellcheck": "false"}),
            )

    def clean(self) -> dict:
        """Every problem at once: the model's own checks (Release.problems) on
        whatever the fields hold, beside the fields' own errors."""
        data = super().clean()
        if self.application is None:
            return data
        raw = {s.slug: (self.data.get(ARTIFACT_PREFIX + s.slug) or "").strip()
               for s in self.services}  # fmt: skip
        for problem in Release.problems(
            self.application, self.data.get("version", ""), raw, self.data.get("notes", ""),
            self.data.get("commit", ""), self.data.get("commit_author", ""),
        ):  # fmt: skip
            name = problem.field or ""
            slug = name.removeprefix("artifacts.")
            if name.startswith("artifacts.") and "@" not in raw.get(slug, "@") and raw[slug]:
                continue  # a tag: resolved through the registry after this
            if name.startswith("artifacts.") and not raw.get(slug):
                continue  # the field's own "required" says it
            field = self._field_for(name)
            if field is None or not self.has_error(field):
                self.add_policy_error(problem)
        version = (self.data.get("version") or "").strip()
        if version and Release.objects.filter(application=self.application,
                                              version=version).exists():  # fmt: skip
            self.add_error("version", f"{self.application.slug} {version} is already "
                           "registered; releases are immutable.")  # fmt: skip
        return data

    def _field_for(self, name: str) -> str | None:
        if name.startswith("artifacts."):
            name = ARTIFACT_PREFIX + name.removeprefix("artifacts.")
        return name if name in self.fields else None

    def artifacts(self) -> dict[str, str]:
        return {s.slug: self.cleaned_data[ARTIFACT_PREFIX + s.slug] for s in self.services}

    def artifact_fields(self) -> list[forms.BoundField]:
        return [self[ARTIFACT_PREFIX + s.slug] for s in self.services]


class DeploymentRequestForm(PolicyErrorMixin, forms.Form):
    environment = forms.ModelChoiceField(queryset=None, empty_label=None)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Approvers read this: what changes and why now (ticket, incident).",
    )
    not_before = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Optional: once approved, it waits and starts no sooner than this "
        f"({settings.TIME_ZONE}).",
    )
    not_after = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Optional: if it has not started by then, it expires.",
    )

    def __init__(self, *args, environments: QuerySet, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = environments


class DecisionForm(forms.Form):
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=2000, required=False
    )
    # The approval digest the page showed: an approval of anything else is refused.
    digest = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)


class ForceUnlockForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        help_text="Why the lock is dead (e.g. the runner that held it was terminated).",
    )


class EmergencyReviewForm(forms.Form):
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        help_text="What the review found: was the emergency real, did the change do what it "
        "said, is follow-up needed?",
    )


class PolicyOverrideForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        help_text="Why these violations may go to production as planned; audited, and named "
        "in the evidence pack.",
    )


class DeploymentFilterForm(forms.Form):
    # QuickSelect: the environment filter lists every environment the user sees.
    status = forms.ChoiceField(
        choices=[("", "Any status"), *Status.choices], required=False, widget=QuickSelect
    )
    environment = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Any environment", widget=QuickSelect
    )

    def __init__(self, *args, environments: QuerySet, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = environments


class RollbackForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Approvers and the audit trail read this: what went wrong (incident, ticket).",
    )
