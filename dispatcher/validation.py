"""The argument checks of ``schedule_messages`` and ``recipients``.

Everything is checked in Python before the transaction starts, so a bad
argument is a clear exception of this project and nothing is written. The
database is not trusted to refuse: PostgreSQL rejects a too-long address or a
NUL character only as a driver error halfway through the transaction, and
SQLite stores them without a word. The limits below are the columns' own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.utils import timezone

from messengers.base import MessengerBase

from .exceptions import (
    InvalidAddress,
    InvalidContext,
    InvalidIdempotencyKey,
    InvalidPriority,
    InvalidRecipient,
    InvalidSendAt,
    InvalidSender,
)
from .models import Dispatch, Message
from .registry import get_registered_messenger_object

ADDRESS_MAX_LENGTH: int = Dispatch._meta.get_field("address").max_length  # type: ignore[assignment]
IDEMPOTENCY_KEY_MAX_LENGTH: int = Message._meta.get_field("idempotency_key").max_length  # type: ignore[assignment]
#: Message.priority is a SmallIntegerField.
PRIORITY_MIN, PRIORITY_MAX = -32768, 32767

#: Control characters (C0, DEL, C1), line and paragraph separators: an address
#: is one line of text; a CR/LF in it would end a mail header.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: What no PostgreSQL text or JSON value can hold: NUL, and lone surrogates
#: (not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

R = TypeVar("R", bound=tuple)


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character, a line break included: it
    cannot be one line of a header (a subject, an address)."""
    return bool(_CONTROL.search(text) or _UNSTORABLE.search(text))


def is_unstorable(text: str) -> bool:
    """Whether ``text`` holds what no PostgreSQL text can (NUL, a lone surrogate)."""
    return bool(_UNSTORABLE.search(text))


def check_address(messenger: MessengerBase | str, address: Any) -> str:
    """The address as the messenger stores it, or :class:`InvalidAddress`.

    The messenger's own ``validate_address`` first (it decides whether an
    empty address means something, as "the configured page" does for some),
    then what holds for every messenger: one line of text that fits the column.
    """
    messenger_obj = get_registered_messenger_object(messenger) if isinstance(messenger, str) else messenger
    address = messenger_obj.validate_address(address)
    if not isinstance(address, str):
        raise InvalidAddress(
            f"{messenger_obj.alias}: an address must be a string, not {type(address).__name__}"
        )
    if has_control_characters(address):
        raise InvalidAddress(f"{messenger_obj.alias}: {address!r} holds control characters")
    if len(address) > ADDRESS_MAX_LENGTH:
        raise InvalidAddress(
            f"{messenger_obj.alias}: the address is {len(address)} characters; at most "
            f"{ADDRESS_MAX_LENGTH} fit"
        )
    return address


def check_recipient(recipient: R) -> R:
    """A ``Recipient`` validated as ``recipients()`` would have made it.

    A hand-built ``Recipient("smtp", "a@b\\r\\nBcc: ...")`` is a tuple like
    any other; it must not skip the checks the builder does.
    """
    alias, address, user = recipient
    if not isinstance(alias, str):
        raise InvalidRecipient(f"{recipient!r}: the messenger must be an alias, not {type(alias).__name__}")
    checked = check_address(alias, address)
    if user is not None and not (isinstance(user, get_user_model()) and user.pk is not None):
        raise InvalidRecipient(f"{recipient!r}: the user must be a saved user or None")
    return recipient if checked == address else recipient._replace(address=checked)  # type: ignore[attr-defined]


def check_priority(priority: Any, what: str = "priority") -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidPriority(f"{what} must be a whole number, not {type(priority).__name__}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidPriority(f"{what} {priority} is out of range ({PRIORITY_MIN} to {PRIORITY_MAX})")


def check_send_at(send_at: Any) -> None:
    if send_at is None:
        return
    if not isinstance(send_at, datetime):
        raise InvalidSendAt(f"send_at must be a datetime, not {type(send_at).__name__}")
    if timezone.is_naive(send_at):
        raise InvalidSendAt(
            "send_at must be timezone-aware (a naive datetime is ambiguous): "
            "use django.utils.timezone.now() + timedelta(...)"
        )


def check_idempotency_key(key: Any, message_count: int) -> None:
    """The key fits its column, suffixes included (``key#1``... for the 2nd message on)."""
    if key is None:
        return
    if not isinstance(key, str):
        raise InvalidIdempotencyKey(f"idempotency_key must be a string, not {type(key).__name__}")
    if has_control_characters(key):
        raise InvalidIdempotencyKey("idempotency_key holds control characters")
    longest = len(key) + (len(f"#{message_count - 1}") if message_count > 1 else 0)
    if longest > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise InvalidIdempotencyKey(
            f"idempotency_key is too long: {longest} characters with its suffix, at most "
            f"{IDEMPOTENCY_KEY_MAX_LENGTH} fit"
        )


def check_sender(sender: Any) -> None:
    if sender is None:
        return
    if not isinstance(sender, get_user_model()):
        raise InvalidSender(f"sender must be a user or None, not {type(sender).__name__}")
    if sender.pk is None:
        raise InvalidSender(f"sender {sender} is not saved")


def check_context(context: Any, alias: str) -> None:
    """The context is stored as JSON: it must serialise, and hold nothing PostgreSQL refuses."""
    try:
        json.dumps(context)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidContext(f"the context of {alias!r} cannot be stored as JSON: {exc}") from None
    if _unstorable(context):
        raise InvalidContext(
            f"the context of {alias!r} holds a NUL character or a lone surrogate, which cannot be stored"
        )


def _unstorable(value: Any) -> bool:
    # Iterative: json.dumps above has bounded the depth, but a walk needs no stack.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if is_unstorable(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def check_schedule(
    messages: Sequence[Any], sender: Any, priority: Any, send_at: Any, idempotency_key: Any
) -> None:
    """Everything about a ``schedule_messages`` call except its recipients."""
    for message in messages:
        check_context(message.context, message.alias)
        check_priority(
            message.priority if priority is None else priority,
            f"the priority of {message.alias!r}" if priority is None else "priority",
        )
    check_send_at(send_at)
    check_idempotency_key(idempotency_key, len(messages))
    check_sender(sender)
