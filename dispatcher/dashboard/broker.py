"""Messages waiting in the broker, per messenger queue (``dispatch.<alias>``).

The database says what is due; the broker says what the workers have not
picked up yet. Both together tell an operator whether workers are missing
(broker queue grows) or tasks were lost (rows due, broker queue empty; the
requeue sweep will publish them again).

On Redis, one pipeline of ``LLEN`` per queue (and per priority sub-queue
kombu keeps, ``<queue>\\x06\\x16<priority>``). On any other transport
(RabbitMQ, the file broker of the embedded profile), kombu's passive
``queue_declare`` gives the message count without creating anything. Every
call is bounded by a short timeout: a dashboard or a scrape must not hang
on a broker that is down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celery import current_app

from messengers.redact import redact

from ..publish import dispatch_queue
from ..queues import REDIS_PRIORITY_STEPS, forget_redis_client, redis_client, redis_list

logger = logging.getLogger("dispatcher.dashboard")

TIMEOUT = 3.0
#: kombu's Redis transport keeps priorities 3, 6 and 9 in sibling lists.


@dataclass
class BrokerDepths:
    """Messages per messenger alias; ``error`` says why there are none (broker unreachable)."""

    depths: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def queue_depths(aliases: list[str]) -> BrokerDepths:
    """Messages waiting in ``dispatch.<alias>`` for each alias. Never raises."""
    url = current_app.conf.broker_url or ""
    options = dict(current_app.conf.broker_transport_options or {})
    try:
        if url.startswith(("redis://", "rediss://")):
            return BrokerDepths(_redis_depths(url, options, aliases))
        return BrokerDepths(_kombu_depths(aliases))
    except Exception as exc:  # an unreachable broker is a state to show, not a crash
        text = redact(f"{type(exc).__name__}: {exc}")
        logger.warning("could not read broker queue depths: %s", text)
        return BrokerDepths(error=text)


def _redis_depths(url: str, options: dict, aliases: list[str]) -> dict[str, int]:
    prefix = options.get("global_keyprefix", "")
    client = redis_client(url, TIMEOUT)
    try:
        with client.pipeline(transaction=False) as pipe:
            for alias in aliases:
                queue = prefix + dispatch_queue(alias)
                for step in REDIS_PRIORITY_STEPS:
                    pipe.llen(redis_list(queue, step))
            lengths = pipe.execute()
    except Exception:
        forget_redis_client(url)  # the next scrape starts from a new connection
        raise
    per_queue = len(REDIS_PRIORITY_STEPS)
    return {
        alias: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, alias in enumerate(aliases)
    }


def _kombu_depths(aliases: list[str]) -> dict[str, int]:
    from kombu.exceptions import ChannelError

    result: dict[str, int] = {}
    with current_app.connection_for_read(connect_timeout=TIMEOUT) as conn:
        conn.ensure_connection(max_retries=0, timeout=TIMEOUT)  # one try, no retry sleep
        for alias in aliases:
            # A fresh channel per queue: on AMQP a passive declare of a missing
            # queue closes the channel it was sent on.
            channel = conn.channel()
            try:
                _, count, _ = channel.queue_declare(queue=dispatch_queue(alias), passive=True)
                result[alias] = int(count)
            except ChannelError:
                result[alias] = 0  # never declared: nothing was ever published to it
            except Exception as exc:
                # py-amqp raises its own NotFound (a ChannelError subclass in
                # amqp.exceptions, not kombu's); treat a 404 the same way.
                if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                    result[alias] = 0
                else:
                    raise
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    return result
