"""Delivery without Celery: what cron-driven sites run, as django-sitemessage's
``sitemessage_send_scheduled`` does.

It goes through the same claim as the workers, so two runs at once (two
crons, or a cron beside workers) never send a dispatch twice: each batch is
claimed with one conditional UPDATE, and only the winner sends it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.utils import timezone

from .delivery import BatchResult, deliver_batch
from .exceptions import UnknownMessageType, UnknownMessenger
from .models import Dispatch
from .registry import get_registered_message_types, get_registered_messenger_objects

logger = logging.getLogger("dispatcher.scheduled")

BATCH = 100
ROUND = 2000


@dataclass
class ScheduledResult:
    """What one run did, summed over its batches."""

    claimed: int = 0
    sent: int = 0
    error: int = 0
    failed: int = 0

    def add(self, batch: BatchResult) -> None:
        self.claimed += batch.claimed
        self.sent += batch.sent
        self.error += batch.error
        self.failed += batch.failed


def send_scheduled_messages(
    priority: int | None = None,
    ignore_unknown_messengers: bool = False,
    ignore_unknown_message_types: bool = False,
    limit: int | None = None,
) -> ScheduledResult:
    """Deliver the due dispatches now, in this process; returns the counts.

    ``priority`` keeps the messages of that priority only. A dispatch through
    a messenger or of a message type this process does not know raises
    :class:`UnknownMessenger` / :class:`UnknownMessageType` before anything is
    sent, unless told to leave such dispatches alone (they stay due, for a
    process that knows them).
    """
    due = Dispatch.objects.filter(status__in=Dispatch.CLAIMABLE, next_attempt_at__lte=timezone.now())
    if priority is not None:
        due = due.filter(message__priority=priority)
    messengers = set(get_registered_messenger_objects())
    types = set(get_registered_message_types())
    unknown_messengers = set(
        due.exclude(messenger__in=messengers).values_list("messenger", flat=True).distinct()
    )
    if unknown_messengers:
        if not ignore_unknown_messengers:
            raise UnknownMessenger(sorted(unknown_messengers)[0])
        due = due.filter(messenger__in=messengers)
    unknown_types = set(
        due.exclude(message__message_type__in=types)
        .values_list("message__message_type", flat=True).distinct()
    )
    if unknown_types:
        if not ignore_unknown_message_types:
            raise UnknownMessageType(sorted(unknown_types)[0])
        due = due.filter(message__message_type__in=types)
    result = ScheduledResult()
    seen: set[int] = set()
    order = ("-message__priority", "next_attempt_at", "pk")
    while limit is None or len(seen) < limit:
        # Rounds of a bounded size: a backlog of millions is never loaded at once.
        size = ROUND if limit is None else min(ROUND, limit - len(seen))
        found = due.order_by(*order).values_list("messenger", "pk")[:size]
        rows = [(alias, pk) for alias, pk in found if pk not in seen]
        if not rows:
            break
        by_alias: dict[str, list[int]] = {}
        for alias, pk in rows:
            seen.add(pk)
            by_alias.setdefault(alias, []).append(pk)
        for alias, ids in by_alias.items():
            for start in range(0, len(ids), BATCH):
                result.add(deliver_batch(alias, ids[start:start + BATCH]))
    if result.claimed:
        logger.info("sent %d, %d to retry, %d failed", result.sent, result.error, result.failed)
    return result
