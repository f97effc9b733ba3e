"""Forms of the private-message pages: write (to one or several users) and reply.

Everything a user types is checked here, with the error shown next to the
field: the subject's length and that it is one line (it becomes a mail's
Subject), the body's length and control characters (a message is plain
text: line breaks and tabs only), the recipients (known, active, not
yourself, at most ``DISPATCHER_INBOX_MAX_RECIPIENTS``), and who may write to
whom (blocks and the exchange filter, :mod:`dispatcher.inbox.exchange`).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.validators import MaxLengthValidator

from .exchange import refusal
from .models import SUBJECT_MAX_LENGTH

DEFAULT_BODY_MAX_LENGTH = 10_000
DEFAULT_MAX_RECIPIENTS = 10
USERNAME_MAX_LENGTH = 150

#: Control characters a plain-text body may not hold: all but tab, LF and CR;
#: and what no database stores (lone surrogates).
_BODY_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_LINE_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: Usernames are separated by commas, semicolons, colons (postman's URLs) or spaces.
_SEPARATORS = re.compile(r"[,;:\s]+")


def body_max_length() -> int:
    return int(getattr(settings, "DISPATCHER_INBOX_BODY_MAX_LENGTH", DEFAULT_BODY_MAX_LENGTH))


def max_recipients() -> int:
    return int(getattr(settings, "DISPATCHER_INBOX_MAX_RECIPIENTS", DEFAULT_MAX_RECIPIENTS))


def split_usernames(value: str) -> list[str]:
    """``"bob, cat:dan"`` -> ``["bob", "cat", "dan"]``, each once, in order."""
    names: list[str] = []
    for name in _SEPARATORS.split(value or ""):
        if name and name not in names:
            names.append(name)
    return names


class MessageForm(forms.Form):
    subject = forms.CharField(max_length=SUBJECT_MAX_LENGTH, required=False)
    body = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 12}))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        body = self.fields["body"]
        body.max_length = body_max_length()
        body.widget.attrs["maxlength"] = str(body_max_length())
        body.validators.append(MaxLengthValidator(body_max_length()))

    def clean_subject(self) -> str:
        subject = self.cleaned_data["subject"]
        if _LINE_FORBIDDEN.search(subject):
            raise forms.ValidationError("The subject must be one line, without control characters.")
        return str(subject)

    def clean_body(self) -> str:
        body = self.cleaned_data["body"]
        if _BODY_FORBIDDEN.search(body):
            raise forms.ValidationError(
                "The message holds control characters: only text, line breaks and tabs are allowed."
            )
        return str(body)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and not (data.get("subject", "").strip() or data.get("body", "").strip()):
            raise forms.ValidationError("Write a subject or a message.")
        return data


class WriteForm(MessageForm):
    """A new message to one or several users, named by their usernames."""

    recipients = forms.CharField(
        max_length=1000, help_text="Usernames, separated by commas.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "list": "inbox-recipients-list"}),
    )

    field_order = ["recipients", "subject", "body"]

    def __init__(self, *args: Any, sender: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sender = sender

    def clean_recipients(self) -> list[Any]:
        raw = self.cleaned_data["recipients"]
        if _LINE_FORBIDDEN.search(raw):
            raise forms.ValidationError("Usernames cannot hold control characters.")
        names = split_usernames(raw)
        if not names:
            raise forms.ValidationError("Name at least one recipient.")
        if len(names) > max_recipients():
            raise forms.ValidationError(f"At most {max_recipients()} recipients at once.")
        if any(len(name) > USERNAME_MAX_LENGTH for name in names):
            raise forms.ValidationError("A username is too long.")
        user_model = get_user_model()
        field = user_model.USERNAME_FIELD
        found = {
            getattr(u, field): u
            for u in user_model._default_manager.filter(is_active=True, **{f"{field}__in": names})
        }
        unknown = [name for name in names if name not in found]
        if unknown:
            raise forms.ValidationError(f"No such user: {', '.join(unknown)}.")
        users = [found[name] for name in names]
        if any(u.pk == self.sender.pk for u in users):
            raise forms.ValidationError("You cannot write to yourself.")
        refused = [(u, refusal(self.sender, u, users)) for u in users]
        problems = [f"{u.get_username()}: {reason}" for u, reason in refused if reason is not None]
        if problems:
            raise forms.ValidationError([f"You cannot write to {p}." for p in problems])
        return users


class ReplyForm(MessageForm):
    """An answer to a message: the recipient is the other party of the message."""
