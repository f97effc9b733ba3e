"""Fan-outs too large to hold in memory: a million users, ten million addresses.

A :class:`~dispatcher.recipients.RecipientStream` is read, checked and
written chunk by chunk (COPY on PostgreSQL, each chunk's while the next is
read and checked: :class:`~dispatcher.bulk.StreamWriter`), so memory stays
flat whatever the audience; the caller gets a :class:`FanOut` summary, not a million objects.
It is still all or nothing: every chunk is written in one transaction, and an
invalid recipient anywhere rolls all of it back (unless the stream skips
invalid ones). Tasks are published after the commit, reading the ids back in
chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from .bulk import StreamWriter
from .exceptions import InvalidRecipient, NoRecipients
from .messages import MessageBase
from .models import Dispatch, Message
from .publish import publish
from .recipients import RecipientStream
from .registry import get_registered_messenger_object

logger = logging.getLogger("dispatcher.fanout")

#: Ids handed to one publish() call while tasks are published after the commit.
PUBLISH_CHUNK = 50_000


@dataclass
class FanOut:
    """What a streamed fan-out wrote."""

    message: Message
    count: int
    skipped: int = 0
    #: True when an earlier call with the same idempotency key wrote it.
    existing: bool = False

    def dispatches(self) -> models.QuerySet:
        return Dispatch.objects.filter(message=self.message)


def schedule_stream(
    message: MessageBase,
    stream: RecipientStream,
    sender: Any,
    priority: int | None,
    send_at: datetime | None,
    idempotency_key: str | None,
) -> FanOut:
    """Write ``message`` and one dispatch per recipient of ``stream``."""
    if not message.supports(get_registered_messenger_object(stream.messenger)):
        raise InvalidRecipient(f"message type {message.alias!r} cannot be sent through {stream.messenger!r}")
    if idempotency_key:
        found = _existing(idempotency_key)
        if found is not None:
            return found
    now = timezone.now()
    due = send_at or now
    queued_at = now if due <= now else None
    try:
        with transaction.atomic():
            row = Message.objects.create(
                message_type=message.alias, context=message.context, sender=sender,
                priority=message.priority if priority is None else priority,
                idempotency_key=idempotency_key, created=now,
            )
            count = skipped = 0
            writer = StreamWriter(row, due, queued_at, now)
            try:
                for chunk, skipped_here in stream.chunks():
                    count += writer.write(chunk)  # while the chunk before is being written
                    skipped += skipped_here
                writer.wait()
            finally:
                writer.close()
            if not count:
                raise NoRecipients("the recipient stream is empty")
            if queued_at is not None:
                transaction.on_commit(lambda: publish_message(row))
    except IntegrityError:
        found = _existing(idempotency_key) if idempotency_key else None
        if found is None:
            raise
        return found  # another call with the same key committed first
    logger.info("fan-out of message %s: %d dispatches, %d skipped", row.pk, count, skipped)
    return FanOut(row, count, skipped)


def publish_message(message: Message) -> int:
    """Publish the tasks of a message's pending dispatches, reading ids in chunks."""
    ids = (
        Dispatch.objects.filter(message=message, status=Dispatch.Status.PENDING)
        .order_by("pk").values_list("messenger", "pk")
    )
    published = 0
    pairs: list[tuple[str, int]] = []
    for pair in ids.iterator(chunk_size=10_000):
        pairs.append(pair)
        if len(pairs) >= PUBLISH_CHUNK:
            published += publish(pairs, priority=message.priority)
            pairs = []
    if pairs:
        published += publish(pairs, priority=message.priority)
    return published


def _existing(key: str) -> FanOut | None:
    message = Message.objects.filter(idempotency_key=key).first()
    if message is None:
        return None
    return FanOut(message, Dispatch.objects.filter(message=message).count(), existing=True)
