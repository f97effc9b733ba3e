"""``{% load dispatcher_preferences %}``: the preferences page for people.

``{% preference_groups rows as groups %}`` arranges the rows of
``get_user_preferences_for_ui`` by the site's categories, each row with its
message type's title and one-line description::

    DISPATCHER_MESSAGE_CATEGORIES = {"account": "Your account", "community": "Community"}

    class WeeklyDigest(MessageBase):
        alias = "digest"
        title = "Weekly digest"
        description = "The week's best discussions, every Monday."
        category = "community"

Groups come in the setting's order; types of a category the setting does
not name follow under the category's key, and types without one last,
under "Other" (with no heading when no type has a category).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django import template
from django.conf import settings

from ..registry import get_registered_message_types

register = template.Library()

OTHER = "Other"


@dataclass
class PreferenceItem:
    row: Any
    title: str
    description: str


@dataclass
class PreferenceGroup:
    key: str
    title: str
    items: list[PreferenceItem] = field(default_factory=list)


def categories() -> dict[str, str]:
    value = getattr(settings, "DISPATCHER_MESSAGE_CATEGORIES", None) or {}
    pairs = value.items() if isinstance(value, Mapping) else value
    return {str(key): str(title) for key, title in pairs}


@register.simple_tag
def preference_groups(rows: Iterable[Any]) -> list[PreferenceGroup]:
    named = categories()
    types = get_registered_message_types()
    groups: dict[str, PreferenceGroup] = {key: PreferenceGroup(key, title) for key, title in named.items()}
    for row in rows:
        type_cls = types.get(row.message_type)
        key = str(getattr(type_cls, "category", "") or "")
        group = groups.setdefault(key, PreferenceGroup(key, named.get(key, key or OTHER)))
        group.items.append(PreferenceItem(
            row, str(row.title), str(getattr(type_cls, "description", "") or "").strip(),
        ))
    found = [g for g in groups.values() if g.items]
    order = {key: i for i, key in enumerate(named)}

    def place(group: PreferenceGroup) -> tuple[int, int, str]:
        if group.key in order:
            return (0, order[group.key], "")
        return (2, 0, "") if group.key == "" else (1, 0, group.title)

    found.sort(key=place)
    if len(found) == 1 and found[0].key == "":
        found[0].title = ""  # nothing is categorised: no heading
    return found
