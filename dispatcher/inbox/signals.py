"""Signals of the private messages, as in django-directmessages.

``message_sent`` fires once a message is visible to its recipient: when it is
written already accepted, or later when a moderator accepts it. Rejected
messages never fire it. ``message_read`` fires when a message goes from unread
to read, once, whoever marked it.

Both are sent after the transaction that made the change commits, so a
receiver always finds the row as the signal describes it. As in
directmessages, the signal's ``sender`` argument is the message itself, and
the keyword arguments are ``message`` (the same message), ``from_user`` (the
sending user, None for a visitor) and ``to`` (the recipient, None for a
visitor)::

    from django.dispatch import receiver
    from dispatcher.inbox.signals import message_sent

    @receiver(message_sent)
    def on_sent(sender, message, from_user, to, **kwargs):
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger("dispatcher.inbox.signals")

message_sent = Signal()
message_read = Signal()


def send_after_commit(signal: Signal, messages: Iterable[Any]) -> None:
    """Send ``signal`` for each message once the current transaction commits.

    Receivers' errors are logged, not raised: the change is committed already,
    and one broken receiver must not hide the message from the others.
    """
    if not signal.receivers:
        return
    messages = list(messages)
    if not messages:
        return

    def fire() -> None:
        for message in messages:
            responses = signal.send_robust(
                sender=message, message=message, from_user=message.sender, to=message.recipient
            )
            for receiver, response in responses:
                if isinstance(response, Exception):
                    logger.error("receiver %r of %s failed: %r", receiver, signal, response)

    transaction.on_commit(fire)
