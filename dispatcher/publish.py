"""Ring the broker's bell: publish deliver tasks for dispatch ids.

A task carries only a messenger alias and ids; the worker reads the rest from
the database. Losing a task loses nothing: the requeue sweep republishes rows
that stay due and unclaimed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from celery import current_app
from django.conf import settings

logger = logging.getLogger("dispatcher.publish")

DELIVER_TASK = "dispatcher.deliver"


def dispatch_queue(alias: str) -> str:
    return f"dispatch.{alias}"


def publish(pairs: Iterable[tuple[str, int]], batch_size: int | None = None) -> int:
    """Publish deliver tasks for ``(messenger alias, dispatch id)`` pairs.

    Ids are grouped by messenger and cut into batches. Returns the number of
    tasks published. A broker error is logged, not raised: the rows are in the
    database and the requeue sweep will publish them again.
    """
    size = batch_size or settings.DISPATCHER_BATCH_SIZE
    by_alias: dict[str, list[int]] = defaultdict(list)
    for alias, pk in pairs:
        by_alias[alias].append(pk)
    published = 0
    for alias, ids in by_alias.items():
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                current_app.send_task(DELIVER_TASK, args=(alias, chunk), queue=dispatch_queue(alias))
            except Exception:
                logger.exception(
                    "could not publish %d dispatches of %s; the requeue sweep will retry",
                    len(chunk), alias,
                )
                _forget_queued(chunk)
            else:
                published += 1
    return published


def _forget_queued(ids: list[int]) -> None:
    from .models import Dispatch

    Dispatch.objects.filter(pk__in=ids).update(queued_at=None)
