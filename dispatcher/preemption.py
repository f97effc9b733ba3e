"""A batch gives way to more urgent work waiting for its messenger.

Broker priorities put an urgent task ahead of a backlog *in the broker*, but
a worker process busy with a batch of 500 routine mails (or of 500 requests
to a provider taking 100 ms each) only takes its next task when that batch
ends: seconds to minutes. So a running batch asks, at most every
``DISPATCHER_PREEMPT_INTERVAL`` seconds, whether a task of a higher priority
band waits in its messenger's queue; if one does, it stops between two sends,
gives the rows it has not handed to the messenger back (PENDING, no attempt
counted, published again at their own priority) and ends, so the worker
process takes the urgent task next (``worker_disable_prefetch`` keeps the
worker from holding routine tasks ahead of it).

Only Redis can be asked cheaply (``LLEN`` of kombu's per-priority lists);
on other brokers a batch runs to its end.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect

from django.conf import settings

from .queues import REDIS_PRIORITY_STEPS, broker_priority, dispatch_queue, redis_client, redis_list

logger = logging.getLogger(__name__)

def _step(kombu_priority: int) -> int:
    return REDIS_PRIORITY_STEPS[bisect(REDIS_PRIORITY_STEPS, kombu_priority) - 1]


def more_urgent_lists(queue: str, priority: int) -> list[str]:
    """Names of the Redis lists holding tasks of ``queue`` more urgent than a
    task of the dispatcher's ``priority`` (0-9, higher is more urgent)."""
    mine = _step(9 - max(0, min(9, priority)))  # kombu serves 0 first
    return [redis_list(queue, step) for step in REDIS_PRIORITY_STEPS if step < mine]


class Preemption:
    """Whether a batch of ``alias`` at ``priority`` should give way now."""

    def __init__(self, alias: str, priority: int):
        url = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
        interval = float(getattr(settings, "DISPATCHER_PREEMPT_INTERVAL", 0.1))
        urgent = broker_priority(priority, url) is not None and url.startswith(("redis://", "rediss://"))
        self.lists = more_urgent_lists(dispatch_queue(alias), priority) if urgent and interval > 0 else []
        self.url = url
        self.interval = interval
        self.next_check = time.monotonic() + interval
        self.yielded = False

    def due(self) -> bool:
        """True once a more urgent task waits (asked at most every interval)."""
        if self.yielded:
            return True
        if not self.lists or time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + self.interval
        try:
            pipe = redis_client(self.url).pipeline(transaction=False)
            for name in self.lists:
                pipe.llen(name)
            self.yielded = any(pipe.execute())
        except Exception as exc:  # the broker unreachable: finish the batch
            logger.debug("could not ask the broker for urgent tasks: %s", exc)
            return False
        return self.yielded
