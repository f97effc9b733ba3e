"""Message-type subscriptions: who receives which message type through which messenger.

``schedule_messages(message)`` with no recipients sends to the subscribers of
the message's type. Users manage their own subscriptions on a preferences
page; only pairs the page showed can change, and only pairs a user may
subscribe to (``allow_user_subscription`` on both the message type and the
messenger, and the type's ``requires``/``supported_messengers``) are accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest

from .models import Subscription
from .registry import (
    get_registered_message_type,
    get_registered_message_types,
    get_registered_messenger_object,
    get_registered_messenger_objects,
)

FIELD = "pref"
SHOWN = "pref_shown"
#: django-sitemessage's form field and its "message_type|messenger" values.
SEED_FIELD = "sm_user_pref"
SEED_SEPARATOR = "|"


def subscribe(message_type: str, messenger: str, recipient: Any) -> Subscription:
    """Subscribe a user or a raw address; subscribing twice changes nothing."""
    get_registered_message_type(message_type)
    get_registered_messenger_object(messenger)
    if isinstance(recipient, str):
        lookup = {"recipient": None, "address": recipient}
    else:
        lookup = {"recipient": recipient, "address": ""}
    subscription, _ = Subscription.objects.get_or_create(
        message_type=message_type, messenger=messenger, **lookup
    )
    return subscription


def unsubscribe(message_type: str, messenger: str, recipient: Any) -> int:
    if isinstance(recipient, str):
        qs = Subscription.objects.filter(recipient=None, address=recipient)
    else:
        qs = Subscription.objects.filter(recipient=recipient)
    return qs.filter(message_type=message_type, messenger=messenger).delete()[0]


def user_may_subscribe(message_type: str, messenger: str) -> bool:
    try:
        type_cls = get_registered_message_type(message_type)
        messenger_obj = get_registered_messenger_object(messenger)
    except LookupError:
        return False
    return (
        type_cls.allow_user_subscription
        and messenger_obj.allow_user_subscription
        and type_cls.supports(messenger_obj)
    )


@dataclass
class PreferenceRow:
    message_type: str
    title: str
    #: (messenger alias, field value, checked, available) per messenger column
    cells: list[tuple[str, str, bool, bool]]


class UserPreferences(tuple):  # type: ignore[type-arg]
    """What :func:`get_user_preferences_for_ui` returns.

    Unpacked, it is django-sitemessage's pair: the messenger column titles, and
    a dict of message type title -> one ``(alias, supported, subscribed)`` per
    column, ``alias`` being ``"message_type|messenger"`` (``""`` where the
    type cannot go through that messenger). Message types of the same title
    share a row, as there. The same table, by alias, is in :attr:`messengers`
    (``(alias, title)`` per column) and :attr:`rows` (a :class:`PreferenceRow`
    per message type).
    """

    messengers: list[tuple[str, str]]
    rows: list[PreferenceRow]

    def __new__(cls, messengers: list[tuple[str, str]], rows: list[PreferenceRow]) -> UserPreferences:
        by_title: dict[str, list[tuple[str, bool, bool]]] = {}
        for row in rows:
            cells = by_title.setdefault(row.title, [("", False, False)] * len(messengers))
            for i, (messenger, _, checked, available) in enumerate(row.cells):
                if available and not cells[i][1]:
                    cells[i] = (f"{row.message_type}{SEED_SEPARATOR}{messenger}", True, checked)
        prefs = super().__new__(cls, ([title for _, title in messengers], by_title))
        prefs.messengers = messengers
        prefs.rows = rows
        return prefs


class PreferencesChange(tuple):  # type: ignore[type-arg]
    """``(added, removed)``; true when the form had a ticked box, as
    django-sitemessage's ``set_user_preferences_from_request`` answers."""

    found: bool

    def __new__(cls, added: int, removed: int, found: bool) -> PreferencesChange:
        change = super().__new__(cls, (added, removed))
        change.found = found
        return change

    @property
    def added(self) -> int:
        return int(self[0])

    @property
    def removed(self) -> int:
        return int(self[1])

    def __bool__(self) -> bool:
        return self.found


def _selects(selector: Any, item: Any, alias: str) -> bool:
    """A filter as a callable (django-sitemessage: given the message type class
    or the messenger object) or as a collection of aliases; None keeps all."""
    if selector is None:
        return True
    if callable(selector):
        return bool(selector(item))
    if isinstance(selector, str):
        return alias == selector
    return alias in selector


def get_user_preferences_for_ui(
    user: Any,
    message_filter: Callable[[Any], bool] | Collection[str] | None = None,
    messenger_filter: Callable[[Any], bool] | Collection[str] | None = None,
    new_messengers_titles: Mapping[str, str] | None = None,
) -> UserPreferences:
    """The preferences table of ``user`` (see :class:`UserPreferences`).

    It offers only what the user may subscribe to. ``message_filter`` and
    ``messenger_filter`` narrow it (a callable given the message type class or
    the messenger object, or a collection of aliases); ``new_messengers_titles``
    renames columns (alias -> title).
    """
    titles = new_messengers_titles or {}
    messengers = [
        (alias, str(titles.get(alias) or m))
        for alias, m in get_registered_messenger_objects().items()
        if m.allow_user_subscription and _selects(messenger_filter, m, alias)
    ]
    types = [
        (alias, type_cls) for alias, type_cls in get_registered_message_types().items()
        if type_cls.allow_user_subscription and _selects(message_filter, type_cls, alias)
    ]
    available = {(t, m) for t, _ in types for m, _ in messengers if user_may_subscribe(t, m)}
    # Columns nothing can go through are left out; columns and rows by title, as shown.
    messengers = sorted(((a, t) for a, t in messengers if any(m == a for _, m in available)),
                        key=lambda column: (column[1], column[0]))
    current = set(
        Subscription.objects.filter(recipient=user).values_list("message_type", "messenger")
    )
    rows = []
    for alias, type_cls in sorted(types, key=lambda item: (str(item[1].title or item[0]), item[0])):
        cells = [(m, f"{alias}:{m}", (alias, m) in current, (alias, m) in available) for m, _ in messengers]
        if any(cell[3] for cell in cells):
            rows.append(PreferenceRow(alias, str(type_cls.title or alias), cells))
    return UserPreferences(messengers, rows)


def _may_choose() -> set[tuple[str, str]]:
    """Every pair a user may subscribe to: what a full preferences table shows."""
    return {
        (t, m) for t in get_registered_message_types() for m in get_registered_messenger_objects()
        if user_may_subscribe(t, m)
    }


def set_user_preferences_from_request(request: HttpRequest) -> PreferencesChange:
    """Apply the preferences form; returns ``(added, removed)``, true when a box was ticked.

    Our form lists the pairs it showed in ``pref_shown`` and the ticked ones in
    ``pref``: only the shown pairs change. django-sitemessage's form
    (``sm_user_pref`` = ``"type|messenger"``, ticked boxes only) is read as a
    table of everything the user may subscribe to: what is not ticked there is
    removed, and subscriptions the user could not have chosen (made by staff,
    or to restricted types) are kept. A pair the user may not subscribe to
    raises PermissionDenied and nothing changes.
    """
    user = request.user
    post = request.POST
    wanted = {_pair(v) for v in [*post.getlist(FIELD), *post.getlist(SEED_FIELD)]}
    shown = {_pair(v) for v in post.getlist(SHOWN)}
    if not shown and SEED_FIELD in post:
        shown = _may_choose()
    for pair in shown | wanted:
        if not user_may_subscribe(*pair):
            raise PermissionDenied(f"cannot subscribe to {pair[0]!r} through {pair[1]!r}")
    found = bool(wanted)
    wanted &= shown
    with transaction.atomic():
        current = set(
            Subscription.objects.select_for_update()
            .filter(recipient=user)
            .values_list("message_type", "messenger")
        )
        add = wanted - current
        remove = (shown - wanted) & current
        Subscription.objects.bulk_create(
            [Subscription(message_type=t, messenger=m, recipient=user) for t, m in add],
            ignore_conflicts=True,
        )
        removed = 0
        if remove:
            pairs = Q()
            for message_type, messenger in remove:
                pairs |= Q(message_type=message_type, messenger=messenger)
            removed = Subscription.objects.filter(pairs, recipient=user).delete()[0]
    return PreferencesChange(len(add), removed, found)


def _pair(value: str) -> tuple[str, str]:
    """``"type:messenger"`` (ours) or ``"type|messenger"`` (django-sitemessage's)."""
    separator = SEED_SEPARATOR if SEED_SEPARATOR in value else ":"
    message_type, _, messenger = value.partition(separator)
    return message_type, messenger
