"""``dispatcher.inbox.context_processors.inbox``: the unread count in every template.

Add it to ``TEMPLATES[0]["OPTIONS"]["context_processors"]``; templates then
have ``inbox_unread_count`` (and django-postman's ``postman_unread_count``).
The count is computed only when a template shows it, with one indexed query.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from .models import PrivateMessage


def inbox(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    count = SimpleLazyObject(lambda: PrivateMessage.objects.unread_count(user))
    return {
        "inbox_unread_count": count,
        "postman_unread_count": count,
        "live_poll_seconds": int(getattr(settings, "DISPATCHER_LIVE_POLL_SECONDS", 15)),
    }
