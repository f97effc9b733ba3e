"""``{% load feed_tags %}``: the bell's number for a site's base template.

``{% feed_unread %}`` (or django-notifications-hq's name,
``{% notifications_unread %}``) prints the logged-in user's unread in-app
notifications, nothing for a visitor; ``... as count`` keeps it in a
variable. One query, on the partial index of unread rows.
"""

from __future__ import annotations

from typing import Any

from django import template

from ..models import Notification

register = template.Library()


@register.simple_tag(takes_context=True)
def feed_unread(context: Any) -> int | str:
    user = context.get("user")
    if user is None:
        user = getattr(context.get("request"), "user", None)
    if user is None or not user.is_authenticated:
        return ""
    return Notification.objects.unread_count(user)


register.simple_tag(feed_unread, takes_context=True, name="notifications_unread")
