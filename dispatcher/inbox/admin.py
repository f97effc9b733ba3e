"""Admin of private messages: the moderators' queue.

Pending messages are filtered in one click; "Accept" decides at once, and
"Reject" first asks for the reason that the sender's notification carries.
Decisions go through :func:`dispatcher.inbox.moderation.moderate`, so they
notify and fire signals exactly as the API does. The moderation fields are
read-only in the change form: a decision is an action, never a silent edit.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .models import REASON_MAX_LENGTH, PrivateMessage
from .moderation import moderate


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=REASON_MAX_LENGTH, required=False,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Sent to the sender with the rejection notice.",
    )


@admin.action(description="Accept selected messages", permissions=["change"])
def accept_messages(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    count = moderate(queryset, accept=True, moderator=request.user)
    modeladmin.message_user(request, f"{count} messages accepted.", messages.SUCCESS)


@admin.action(description="Reject selected messages…", permissions=["change"])
def reject_messages(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
    """First a page asking for the reason; its submission (``apply``) rejects."""
    if "apply" in request.POST:
        form = RejectForm(request.POST)
        if form.is_valid():
            count = moderate(queryset, accept=False, moderator=request.user,
                             reason=form.cleaned_data["reason"])
            modeladmin.message_user(request, f"{count} messages rejected.", messages.SUCCESS)
            return None
    else:
        form = RejectForm()
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Reject private messages",
        "opts": modeladmin.model._meta,
        "queryset": queryset.select_related("sender", "recipient"),
        "form": form,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "action": "reject_messages",
    }
    return TemplateResponse(request, "admin/inbox/privatemessage/reject.html", context)


@admin.register(PrivateMessage)
class PrivateMessageAdmin(admin.ModelAdmin):
    list_display = (
        "id", "subject_or_excerpt", "sender_label", "recipient_label", "sent_at", "read_at",
        "moderation_status",
    )
    list_filter = ("moderation_status", "sent_at")
    search_fields = ("subject", "body", "email")
    list_select_related = ("sender", "recipient")
    date_hierarchy = "sent_at"
    raw_id_fields = ("sender", "recipient", "parent", "thread")
    readonly_fields = ("moderation_status", "moderation_by", "moderation_date", "moderation_reason")
    actions = [accept_messages, reject_messages]
    show_full_result_count = False

    @admin.display(description="subject", ordering="subject")
    def subject_or_excerpt(self, obj: PrivateMessage) -> str:
        return obj.excerpt or "(empty)"

    @admin.display(description="sender")
    def sender_label(self, obj: PrivateMessage) -> str:
        return obj.sender_label

    @admin.display(description="recipient")
    def recipient_label(self, obj: PrivateMessage) -> str:
        return obj.recipient_label
