"""``dispatcher.feed.context_processors.feed``: the bell's count in every template.

Templates get ``feed_unread_count``, computed only if shown (one indexed
COUNT), and ``live_poll_seconds`` for the header's live updates.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from .models import Notification


def feed(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "feed_unread_count": SimpleLazyObject(lambda: Notification.objects.unread_count(user)),
        "live_poll_seconds": int(getattr(settings, "DISPATCHER_LIVE_POLL_SECONDS", 15)),
    }
