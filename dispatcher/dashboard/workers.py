"""Which messenger queues running workers consume, so that dispatches no worker serves show.

A worker consumes ``dispatch.<alias>`` for the messengers it knew when it
started (or the queues named by ``-Q``). A dispatch through a messenger that
only a web process or a shell registered, or that was added after the
workers started, waits for ever: the requeue sweep publishes it again and
again to a queue nobody reads. The dashboard and ``dispatcher_status`` say so.

The workers are asked with Celery's remote control (``inspect().active_queues()``,
a broadcast every worker answers, on Redis, RabbitMQ and the file broker
alike) rather than a heartbeat they would write: it answers what the workers
consume right now, ``-Q`` and all, needs nothing on the workers' side, and a
worker that died simply does not answer. It costs one broadcast and a short
wait, so it is asked only when something is due, and its answer is kept for
a few seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from celery import current_app

from messengers.redact import redact

from ..queues import dispatch_queue

logger = logging.getLogger("dispatcher.dashboard")

#: Seconds to wait for the workers' answers (they answer within milliseconds).
TIMEOUT = 1.0
#: Seconds an answer is reused (a dashboard reloaded, a scrape).
CACHE_SECONDS = 10.0

_cache: tuple[float, WorkerQueues] | None = None


@dataclass
class WorkerQueues:
    """The queues the workers that answered consume; ``error`` when they could not be asked."""

    queues: set[str] = field(default_factory=set)
    workers: int = 0
    error: str | None = None


@dataclass
class Unserved:
    """A messenger with due dispatches that no running worker consumes."""

    messenger: str
    queue: str
    due: int

    def __str__(self) -> str:
        return (f"{self.due} dispatch{'es' if self.due != 1 else ''} due for {self.messenger!r}, but no "
                f"running worker consumes {self.queue} (workers serve the messengers they knew when "
                f"they started: start or restart one that has {self.messenger!r})")


def worker_queues(timeout: float = TIMEOUT) -> WorkerQueues:
    """Ask the running workers which queues they consume. Never raises."""
    global _cache
    if _cache and time.monotonic() - _cache[0] < CACHE_SECONDS:
        return _cache[1]
    try:
        with current_app.connection_for_write(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)  # one try: a dead broker answers now
            replies = current_app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    except Exception as exc:  # an unreachable broker is a state to show, not a crash
        text = redact(f"{type(exc).__name__}: {exc}")
        logger.warning("could not ask the workers for their queues: %s", text)
        return WorkerQueues(error=text)
    answer = WorkerQueues({queue["name"] for queues in replies.values() for queue in queues or ()},
                          len(replies))
    _cache = (time.monotonic(), answer)
    return answer


def unserved(due: dict[str, int], timeout: float = TIMEOUT) -> tuple[list[Unserved], WorkerQueues | None]:
    """The messengers of ``due`` (alias -> due dispatches) whose queue no running worker consumes.

    Asks the workers only when something is due; returns what they said (None: not asked).
    """
    due = {alias: n for alias, n in due.items() if n}
    if not due:
        return [], None
    workers = worker_queues(timeout)
    if workers.error:
        return [], workers
    found = [Unserved(alias, dispatch_queue(alias), n) for alias, n in sorted(due.items())
             if dispatch_queue(alias) not in workers.queues]
    return found, workers


def clear_cache() -> None:
    global _cache
    _cache = None
