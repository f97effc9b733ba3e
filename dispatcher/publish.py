"""Ring the broker's bell: publish deliver tasks for dispatch ids.

A task carries only a messenger alias and ids; the worker reads the rest from
the database. Losing a task loses nothing: the requeue sweep republishes rows
that stay due and unclaimed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from celery import current_app
from django.conf import settings

from messengers.redact import redact

from .exceptions import BrokerUnavailable
from .models import Dispatch
from .queues import DELIVER_TASK, broker_priority, dispatch_queue

__all__ = ["DELIVER_TASK", "batch_size_for", "dispatch_queue", "publish"]

logger = logging.getLogger("dispatcher.publish")

#: Set by :func:`dispatcher.testing.deliver_inline` (tests only): publish()
#: then hands each batch, ``(alias, ids)``, to this callable in the calling
#: process instead of sending a task to the broker. None everywhere else.
local_delivery: Callable[[str, list[int]], object] | None = None


def batch_size_for(count: int) -> int:
    """How many ids one task carries, for ``count`` dispatches of one messenger.

    A fan-out is cut into about DISPATCHER_FANOUT_TASKS tasks so that many
    workers share it, with batches of at least DISPATCHER_MIN_BATCH_SIZE
    (fewer, larger tasks cost less to publish and to claim) and at most
    DISPATCHER_BATCH_SIZE.
    """
    spread = -(-count // settings.DISPATCHER_FANOUT_TASKS)
    return max(1, min(settings.DISPATCHER_BATCH_SIZE, max(settings.DISPATCHER_MIN_BATCH_SIZE, spread)))


def publish(
    pairs: Iterable[tuple[str, int]], batch_size: int | None = None, strict: bool = False, priority: int = 0,
    countdown: float | None = None,
) -> int:
    """Publish deliver tasks for ``(messenger alias, dispatch id)`` pairs.

    Ids are grouped by messenger and cut into batches. Returns the number of
    tasks published. A broker error is logged, not raised: the rows are in the
    database and the requeue sweep will publish them again. The sweep itself
    publishes with ``strict=True``: the error is raised
    (:class:`BrokerUnavailable`), so it stops and reports instead of picking
    the same rows again. ``priority`` is the messages' priority (higher is
    more urgent), passed to the broker so their tasks go ahead of a backlog.
    ``countdown`` (seconds) delays the tasks: dispatches postponed for a
    short while by flow control come back on time without the sweep.
    """
    if not settings.DISPATCHER_PUBLISH_TASKS:
        return 0  # cron mode: dispatcher_send_scheduled delivers, no broker is used
    by_alias: dict[str, list[int]] = defaultdict(list)
    for alias, pk in pairs:
        by_alias[alias].append(pk)
    chunks = [
        (alias, ids[start : start + size])
        for alias, ids in by_alias.items()
        for size in [batch_size or batch_size_for(len(ids))]
        for start in range(0, len(ids), size)
    ]
    if local_delivery is not None:
        for alias, chunk in chunks:
            local_delivery(alias, chunk)
        return len(chunks)
    published = 0
    urgency = broker_priority(priority, current_app.conf.broker_url or "")
    try:
        # One producer (one connection) for the whole fan-out.
        with current_app.producer_or_acquire() as producer:
            for alias, chunk in chunks:
                current_app.send_task(
                    DELIVER_TASK, args=(alias, chunk), queue=dispatch_queue(alias), producer=producer,
                    priority=urgency, countdown=countdown,
                    # What Flower and the logs show; repr() of 100 ids costs more than the send.
                    argsrepr=f"({alias!r}, [{chunk[0]}..{chunk[-1]}] {len(chunk)} ids)", kwargsrepr="{}",
                )
                published += 1
    except Exception as exc:
        unpublished = [pk for _, chunk in chunks[published:] for pk in chunk]
        _forget_queued(unpublished)
        if strict:
            raise BrokerUnavailable(
                f"could not publish {len(unpublished)} dispatches: the broker is unreachable "
                f"({type(exc).__name__}: {redact(str(exc))})", published
            ) from exc
        logger.exception(
            "could not publish %d dispatches; the requeue sweep will publish them", len(unpublished)
        )
    return published


def _forget_queued(ids: list[int]) -> None:
    Dispatch.objects.filter(pk__in=ids).update(queued_at=None)
