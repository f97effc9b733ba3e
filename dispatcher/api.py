"""The public API: schedule messages, name recipients, register messengers."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from . import digests, fallback
from . import throttle as throttling
from .bulk import create_dispatches
from .exceptions import (
    InvalidArgument,
    InvalidRecipient,
    MessageTooLong,
    NoRecipients,
    NotAMessage,
    UnknownMessageType,
)
from .fallback import fallback_chain, set_channel_order
from .fanout import FanOut, schedule_stream
from .messages import UNSUBSCRIBABLE, MessageBase, PlainTextMessage
from .models import Dispatch, Message, Subscription
from .publish import publish
from .recipients import Recipient, RecipientStream, _CheckedRecipient, recipient_stream, recipients
from .registry import (
    get_registered_message_type,
    get_registered_message_types,
    get_registered_messenger_object,
    get_registered_messenger_objects,
    register_message_types,
    register_messenger_objects,
)
from .scheduled import send_scheduled_messages
from .suppression import is_suppressed, suppress, unsuppress
from .validation import check_recipient, check_schedule

__all__ = [
    "Inbox",
    "FanOut",
    "Recipient",
    "cancel",
    "fallback_chain",
    "get_dispatcher_urls",
    "get_registered_message_types",
    "get_registered_messenger_object",
    "get_registered_messenger_objects",
    "get_sitemessage_urls",
    "get_user_preferences_for_ui",
    "is_suppressed",
    "pm_broadcast",
    "pm_write",
    "recipient_stream",
    "recipients",
    "register_message_types",
    "register_messenger_objects",
    "retry_now",
    "schedule_email",
    "schedule_messages",
    "send_scheduled_messages",
    "send_test_message",
    "set_channel_order",
    "set_user_preferences_from_request",
    "subscribe",
    "subscribe_to_model_event",
    "suppress",
    "unsubscribe",
    "unsubscribe_from_model_event",
    "unsuppress",
]

if TYPE_CHECKING:  # for type checkers only; see __getattr__ below
    from .inbox.api import Inbox, pm_broadcast, pm_write
    from .mail import schedule_email
    from .model_events import subscribe_to_model_event, unsubscribe_from_model_event
    from .subscriptions import (
        get_user_preferences_for_ui,
        set_user_preferences_from_request,
        subscribe,
        unsubscribe,
    )
    from .urls import get_dispatcher_urls, get_sitemessage_urls

logger = logging.getLogger("dispatcher.api")

#: Offered here, so a site finds everything it calls in one module (as
#: django-sitemessage's toolbox), but loaded on first use: these are built on
#: this module (the inbox, subscriptions, model events, Django's mail, the
#: URLs), and the engine never imports them.
_LAZY = {
    "Inbox": "dispatcher.inbox.api", "pm_write": "dispatcher.inbox.api",
    "pm_broadcast": "dispatcher.inbox.api",
    "subscribe_to_model_event": "dispatcher.model_events",
    "unsubscribe_from_model_event": "dispatcher.model_events",
    "get_user_preferences_for_ui": "dispatcher.subscriptions",
    "set_user_preferences_from_request": "dispatcher.subscriptions",
    "subscribe": "dispatcher.subscriptions", "unsubscribe": "dispatcher.subscriptions",
    "schedule_email": "dispatcher.mail",
    "get_dispatcher_urls": "dispatcher.urls", "get_sitemessage_urls": "dispatcher.urls",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _normalize_messages(messages: Any) -> list[MessageBase]:
    if isinstance(messages, (str, MessageBase)):
        messages = [messages]
    result = []
    for message in messages:
        if isinstance(message, str):
            message = PlainTextMessage(message)
        if not isinstance(message, MessageBase):
            raise NotAMessage(f"{message!r} is neither a string nor a MessageBase instance")
        if not message.alias:
            raise UnknownMessageType(message.alias)
        if get_registered_message_type(message.alias) is not type(message):
            raise UnknownMessageType(f"{message.alias} ({type(message).__name__})")
        result.append(message)
    if not result:
        raise InvalidArgument("schedule_messages() was given no message")
    return result


def _normalize_recipients(recipients_: Any) -> list[Recipient]:
    if isinstance(recipients_, Recipient):
        recipients_ = [recipients_]
    if isinstance(recipients_, (str, bytes)) or not isinstance(recipients_, Iterable):
        raise InvalidRecipient(
            f"{recipients_!r} is not a list of recipients: build them with recipients(messenger, addresses)"
        )
    flat: list[Recipient] = []
    for item in recipients_:
        if isinstance(item, Recipient):
            flat.append(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(r, Recipient) for r in item):
            flat.extend(item)
        else:
            raise InvalidRecipient(
                f"{item!r} is not a recipient: build recipients with recipients(messenger, addresses)"
            )
    if not flat:
        raise NoRecipients("the recipient list is empty")
    # Hand-built Recipient tuples get the checks recipients() does.
    return [r if type(r) is _CheckedRecipient else check_recipient(r) for r in flat]


def _subscribers(message: MessageBase) -> list[Recipient]:
    """The subscribers of the message's type, as recipients (one query)."""
    found = []
    subscriptions = Subscription.objects.filter(message_type=message.alias).select_related("recipient")
    for alias, who in ((s.messenger, s.recipient if s.recipient_id else s.address) for s in subscriptions):
        try:
            found.extend(recipients(alias, who))
        except (LookupError, ValueError):
            # A subscriber without a usable address (or a messenger no longer
            # configured) is skipped, not allowed to block everyone else.
            logger.warning("skipping subscriber %r of %s via %s", who, message.alias, alias)
    return found


def schedule_messages(
    messages: Any,
    recipients: Any = None,
    sender: Any = None,
    priority: int | None = None,
    send_at: datetime | None = None,
    idempotency_key: str | None = None,
    throttle_key: str | None = None,
    throttle: timedelta | None = None,
) -> Any:
    """Schedule one or more messages to recipients; returns ``(message, dispatches)`` pairs.

    Given a :func:`recipient_stream` (an audience of any size), it writes in
    chunks and returns a :class:`~dispatcher.fanout.FanOut` summary instead.

    ``messages`` is a string (a plain-text message), a MessageBase instance, or
    a list of them. Everything is validated first; then the Message and
    Dispatch rows are written in one transaction, and deliver tasks are
    published once it commits (rows with a future ``send_at`` wait for the
    requeue sweep). With ``idempotency_key``, a repeated call returns the rows
    of the first one and writes nothing.

    With ``throttle_key`` and ``throttle`` (a timedelta), at most one message
    per key and address goes per period; the others are written as SKIPPED
    dispatches (:mod:`dispatcher.throttle`). A recipient may be a
    :func:`fallback_chain`. A message type with a ``digest`` window is
    collected into digests instead (:mod:`dispatcher.digests`): the call
    returns the recipients' open :class:`~dispatcher.models.DigestWindow` rows.
    """
    message_objs = _normalize_messages(messages)
    throttling.check(throttle_key, throttle)
    if isinstance(recipients, RecipientStream):
        if throttle_key is not None or digests.is_digest(message_objs[0]):
            raise InvalidArgument("a recipient stream takes neither a throttle nor a digest type")
        if len(message_objs) != 1:
            raise InvalidRecipient("a recipient stream takes one message at a time")
        check_schedule(message_objs, sender, priority, send_at, idempotency_key)
        _check_length(message_objs[0], {recipients.messenger})
        return schedule_stream(message_objs[0], recipients, sender, priority, send_at, idempotency_key)
    if recipients is None:
        # No recipients: the subscribers of each message's type.
        per_message = [_subscribers(m) for m in message_objs]
        for message, targets in zip(message_objs, per_message, strict=True):
            if not targets:
                raise NoRecipients(f"no recipients given, and nobody subscribes to {message.alias!r}")
            message.context[UNSUBSCRIBABLE] = True
    else:
        targets = _normalize_recipients(recipients)
        per_message = [targets] * len(message_objs)
    for message, targets in zip(message_objs, per_message, strict=True):
        _check_length(message, {r.messenger for r in targets})
        for recipient in targets:
            if not message.supports(get_registered_messenger_object(recipient.messenger)):
                raise InvalidRecipient(
                    f"message type {message.alias!r} cannot be sent through {recipient.messenger!r}"
                )
    check_schedule(message_objs, sender, priority, send_at, idempotency_key)
    if any(digests.is_digest(m) for m in message_objs):
        if len(message_objs) != 1 or send_at or idempotency_key or throttle_key or sender:
            raise InvalidArgument("a digest type is scheduled alone, without send_at, idempotency_key, "
                                  "throttle or sender: the digest goes when its window closes")
        if fallback.chains_of(per_message[0]):
            raise InvalidArgument("a digest type takes plain recipients, not fallback chains")
        return digests.collect(message_objs[0], per_message[0])

    keys = [_idempotency_key(idempotency_key, i) for i in range(len(message_objs))]
    if idempotency_key:
        existing = _existing(keys)
        if existing is not None:
            return existing
    throttled = (throttle_key, throttle) if throttle_key is not None and throttle is not None else None
    try:
        return _write(message_objs, per_message, sender, priority, send_at, keys, throttled)
    except IntegrityError:
        if not idempotency_key:
            raise
        # Another call with the same key committed first: return its rows.
        existing = _existing(keys)
        if existing is None:
            raise
        return existing


def _check_length(message: MessageBase, aliases: set[str]) -> None:
    """Refuse a text longer than a messenger takes, before anything is written."""
    text = message.context.get("text")
    if not isinstance(text, str) or message.context.get("_template") or message.template:
        return  # rendered per recipient: the messenger checks what it gets
    for alias in aliases:
        limit = get_registered_messenger_object(alias).max_text_length
        if limit and len(text) > limit:
            raise MessageTooLong(
                f"the text is {len(text)} characters; messenger {alias!r} takes at most {limit}"
            )


def _idempotency_key(key: str | None, index: int) -> str | None:
    if not key:
        return None
    return key if index == 0 else f"{key}#{index}"


def _existing(keys: list[str | None]) -> list[tuple[Message, list[Dispatch]]] | None:
    found = {m.idempotency_key: m for m in Message.objects.filter(idempotency_key__in=keys)}
    if not found:
        return None
    messages = [found[k] for k in keys if k in found]
    by_message: dict[int, list[Dispatch]] = {m.pk: [] for m in messages}
    for dispatch in Dispatch.objects.filter(message__in=messages).order_by("id"):
        by_message[dispatch.message_id].append(dispatch)
    return [(m, by_message[m.pk]) for m in messages]


def _write(
    message_objs: list[MessageBase],
    per_message: list[list[Recipient]],
    sender: Any,
    priority: int | None,
    send_at: datetime | None,
    keys: list[str | None],
    throttled: tuple[str, timedelta] | None = None,
) -> list[tuple[Message, list[Dispatch]]]:
    now = timezone.now()
    due = send_at or now
    queued_at = now if due <= now else None
    with transaction.atomic():
        rows = [
            Message(
                message_type=m.alias,
                context=m.context,
                sender=sender,
                priority=m.priority if priority is None else priority,
                idempotency_key=key,
                created=now,
            )
            for m, key in zip(message_objs, keys, strict=True)
        ]
        # A throttled message and its key's marks go in one statement where the
        # database allows it (the throttle then costs no round trip of its own).
        decided = (throttling.write_message_and_claim(rows[0], *throttled, per_message[0], now)
                   if throttled is not None and len(rows) == 1 else None)
        if decided is None:
            rows = Message.objects.bulk_create(rows)
        result = []
        for message, targets in zip(rows, per_message, strict=True):
            skipped: list[Dispatch] = []
            if throttled is not None:  # the key's decision, in this transaction
                allowed = decided if decided is not None else throttling.claim(*throttled, targets, now)
                held = [t for t, ok in zip(targets, allowed, strict=True) if not ok]
                targets = [t for t, ok in zip(targets, allowed, strict=True) if ok]
                skipped = throttling.skip(message, held, throttled[0], now)
            dispatches = create_dispatches(message, targets, due, queued_at, now)
            if fallback.chains_of(targets):
                fallback.record_chains(dispatches, targets)
            result.append((message, dispatches + skipped))
        if queued_at is not None:
            by_priority: dict[int, list[tuple[str, int]]] = {}
            for message, ds in result:
                by_priority.setdefault(message.priority, []).extend(
                    (d.messenger, d.pk) for d in ds if d.status == Dispatch.Status.PENDING)
            for level, pairs in sorted(by_priority.items(), reverse=True):
                transaction.on_commit(lambda pairs=pairs, level=level: publish(pairs, priority=level))
    return result


def send_test_message(alias: str, to: Any, text: str) -> None:
    """Send ``text`` to ``to`` through messenger ``alias`` now, without the queue.

    Raises the transport's error when it fails.
    """
    get_registered_messenger_object(alias).send_test_message(to, text)


def cancel(target: Message | Dispatch | Sequence[Dispatch] | models.QuerySet) -> int:
    """Cancel the pending and erroring dispatches of a message or of dispatches.

    Dispatches already sent, failed or being sent are left as they are.
    Returns how many were cancelled.
    """
    if isinstance(target, Message):
        qs = Dispatch.objects.filter(message=target)
    elif isinstance(target, Dispatch):
        qs = Dispatch.objects.filter(pk=target.pk)
    elif isinstance(target, models.QuerySet):
        qs = target
    else:
        qs = Dispatch.objects.filter(pk__in=[d.pk for d in target])
    return qs.filter(status__in=Dispatch.CLAIMABLE).update(
        status=Dispatch.Status.CANCELLED, queued_at=None
    )


def retry_now(qs: models.QuerySet) -> int:
    """Make erroring, failed or pending dispatches due now, and publish them."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            qs.filter(
                status__in=[Dispatch.Status.PENDING, Dispatch.Status.ERROR, Dispatch.Status.FAILED]
            ).values_list("messenger", "pk")
        )
        Dispatch.objects.filter(pk__in=[pk for _, pk in ids]).update(
            status=Dispatch.Status.PENDING,
            next_attempt_at=now,
            queued_at=now,
            # A failed dispatch gets a fresh set of attempts.
            attempts=Case(
                When(status=Dispatch.Status.FAILED, then=Value(0)),
                default=F("attempts"),
                output_field=models.PositiveIntegerField(),
            ),
        )
        transaction.on_commit(lambda: publish(ids))
    return len(ids)

