"""django-postman's tag library name: ``{% load postman_tags %}``.

A site moving from django-postman keeps its base template and its own
folder templates: ``{% postman_unread as n %}`` and postman's three filters
(``or_me``, ``compact_date``, ``sub``) work here as they did there, so those
templates need no edit beyond the URL namespace. postman's
``postman_order_by`` tag is not provided: the folders here have one order,
newest first (docs/inbox.md, "The unread count in your base template").
"""

from __future__ import annotations

import datetime
from typing import Any

from django import template
from django.contrib.auth import get_user_model
from django.template.defaultfilters import date as date_filter
from django.utils import timezone

from .inbox_tags import unread_for

register = template.Library()


@register.simple_tag(takes_context=True)
def postman_unread(context: Any) -> int | str:
    """django-postman's ``postman_unread``: the user's unread count, '' for a visitor."""
    return unread_for(context)


def _who(value: Any) -> str:
    """A user by username (postman's default user representation), anything else as text."""
    if isinstance(value, get_user_model()):
        return value.get_username()
    return "" if value is None else str(value)


@register.filter
def or_me(value: Any, arg: Any) -> str:
    """postman's ``message.sender|or_me:user``: "<me>" when the party is the
    reader, so a ported folder template still says who is who."""
    shown = _who(value)
    return "<me>" if shown and shown == _who(arg) else shown


@register.filter(expects_localtime=True, is_safe=False)
def compact_date(value: Any, arg: str) -> Any:
    """postman's ``|compact_date:"G:i,j b,j/n/y"``: the first format for today,
    the second for this year, the third otherwise (dates in the site's zone)."""
    bits = arg.split(",")
    if len(bits) < 3 or not isinstance(value, datetime.datetime):
        return value
    today = timezone.localdate()
    fmt = bits[0] if value.date() == today else bits[1] if value.year == today.year else bits[2]
    return date_filter(value, fmt)


@register.filter(is_safe=True)
def sub(value: Any, arg: Any) -> Any:
    """postman's ``sub`` (its pagination arithmetic): ``value`` minus ``arg``
    as whole numbers, the value unchanged if either is not one."""
    try:
        return int(value) - int(arg)
    except (TypeError, ValueError):
        return value
