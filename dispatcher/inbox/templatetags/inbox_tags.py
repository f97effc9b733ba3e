"""``{% load inbox_tags %}``: the unread count for a site's base template.

``{% inbox_unread %}`` prints the number of unread messages in the
logged-in user's inbox (nothing for an anonymous visitor);
``{% inbox_unread as count %}`` keeps it in a variable. It costs one
query, answered from a small partial index of unread rows (``pm_unread_idx``).
django-postman's ``{% load postman_tags %}{% postman_unread %}`` works too.
"""

from __future__ import annotations

from typing import Any

from django import template

from ..models import PrivateMessage

register = template.Library()


def unread_for(context: Any) -> int | str:
    user = context.get("user")
    if user is None:
        request = context.get("request")
        user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    return PrivateMessage.objects.unread_count(user)


@register.simple_tag(takes_context=True)
def inbox_unread(context: Any) -> int | str:
    """The user's unread count ('' for an anonymous visitor)."""
    return unread_for(context)
