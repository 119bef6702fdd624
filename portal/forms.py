"""Forms of the sign-in and token pages."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm

from portal.core.backends import LOCAL_LOGIN_OFF


class SignInForm(AuthenticationForm):
    """Django's form, with browser hints for password managers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not settings.LOCAL_LOGIN:
            self.error_messages = {**self.error_messages, "invalid_login": LOCAL_LOGIN_OFF}
        self.fields["username"].widget.attrs.update(autocomplete="username", autofocus=True)
        self.fields["password"].widget.attrs.update(autocomplete="current-password")


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What the token is for, e.g. “ci-pipeline”.",
        widget=forms.TextInput(attrs={"placeholder": "ci-pipeline"}),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the token a name.")
        return name


class SecondFactorForm(forms.Form):
    """A code from the authenticator app, or a recovery code."""

    code = forms.CharField(
        max_length=24,
        label="Code",
        help_text="The 6-digit code your authenticator app shows, or one of your recovery codes.",
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "text",
                "autofocus": True,
                "spellcheck": "false",
                "class": "mono",
            }  # fmt: skip
        ),
    )

    def clean_code(self) -> str:
        code = self.cleaned_data["code"].strip()
        if not code:
            raise forms.ValidationError("Type the code.")
        return code


class EnrolmentForm(forms.Form):
    """The first code of a new authenticator, which proves it was set up right."""

    code = forms.CharField(
        max_length=8,
        label="Code from the app",
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
                "class": "mono",
            }  # fmt: skip
        ),
    )
