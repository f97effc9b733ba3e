"""Message-type subscriptions: who receives which message type through which messenger.

``schedule_messages(message)`` with no recipients sends to the subscribers of
the message's type. Users manage their own subscriptions on a preferences
page; only pairs the page showed can change, and only pairs a user may
subscribe to (``allow_user_subscription`` on both the message type and the
messenger, and the type's ``requires``/``supported_messengers``) are accepted.
"""

from __future__ import annotations

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


def get_user_preferences_for_ui(
    user: Any, message_filter: list[str] | None = None, messenger_filter: list[str] | None = None
) -> tuple[list[tuple[str, str]], list[PreferenceRow]]:
    """The preferences table: messenger columns ``(alias, title)`` and a row per message type."""
    messengers = [
        (alias, str(m))
        for alias, m in sorted(get_registered_messenger_objects().items())
        if m.allow_user_subscription and (messenger_filter is None or alias in messenger_filter)
    ]
    current = set(
        Subscription.objects.filter(recipient=user).values_list("message_type", "messenger")
    )
    rows = []
    for alias, type_cls in sorted(get_registered_message_types().items()):
        if not type_cls.allow_user_subscription or (message_filter and alias not in message_filter):
            continue
        cells = [
            (m, f"{alias}:{m}", (alias, m) in current, user_may_subscribe(alias, m))
            for m, _ in messengers
        ]
        if any(available for *_, available in cells):
            rows.append(PreferenceRow(alias, type_cls.title or alias, cells))
    return messengers, rows


def set_user_preferences_from_request(request: HttpRequest) -> tuple[int, int]:
    """Apply the preferences form; returns ``(added, removed)``.

    Only pairs listed in the form's ``pref_shown`` fields change. A pair the
    user may not subscribe to raises PermissionDenied and nothing changes.
    """
    user = request.user
    shown = {_pair(v) for v in request.POST.getlist(SHOWN)}
    wanted = {_pair(v) for v in request.POST.getlist(FIELD)}
    for pair in shown | wanted:
        if not user_may_subscribe(*pair):
            raise PermissionDenied(f"cannot subscribe to {pair[0]!r} through {pair[1]!r}")
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
    return len(add), removed


def _pair(value: str) -> tuple[str, str]:
    message_type, _, messenger = value.partition(":")
    return message_type, messenger
