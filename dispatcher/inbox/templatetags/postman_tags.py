"""django-postman's tag library name: ``{% load postman_tags %}{% postman_unread as n %}``."""

from __future__ import annotations

from typing import Any

from django import template

from .inbox_tags import unread_for

register = template.Library()


@register.simple_tag(takes_context=True)
def postman_unread(context: Any) -> int | str:
    """django-postman's ``postman_unread``: the user's unread count, '' for a visitor."""
    return unread_for(context)
