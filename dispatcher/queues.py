"""Names the broker side uses: the deliver task and one queue per messenger.

Kept free of Django imports, because the Celery app (``dispatcher/celery.py``)
needs them when it is loaded, before Django's apps are.
"""

from typing import Any

DELIVER_TASK = "dispatcher.deliver"
#: Where the sweeps and model events run; every site's workers consume it.
HOUSEKEEPING_QUEUE = "dispatcher"


def dispatch_queue(alias: str) -> str:
    """The queue of messenger ``alias``: a slow transport never starves a fast one."""
    return f"dispatch.{alias}"


def broker_priority(priority: int, broker_url: str) -> int | None:
    """The broker's priority for a message's ``priority`` (higher: more urgent,
    0 to 9), so a worker takes its tasks ahead of a backlog of lower ones.

    Redis (kombu) serves 0 first and keeps priorities in a few sibling lists
    (0, 3, 6, 9 by default); RabbitMQ serves the highest first, up to the
    queue's ``x-max-priority`` (CELERY_TASK_QUEUE_MAX_PRIORITY). Other
    transports (the file broker) have no priorities: None.
    """
    band = max(0, min(9, int(priority)))
    scheme = broker_url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "sentinel"):
        return 9 - band
    if scheme in ("amqp", "amqps", "pyamqp"):
        return band
    return None


#: kombu's Redis transport keeps a queue's tasks in one list per priority step:
#: ``queue`` for step 0 (served first), ``queue + SEP + step`` for the others.
REDIS_PRIORITY_SEP = "\x06\x16"
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)

_redis_clients: dict[str, Any] = {}


def redis_list(queue: str, step: int) -> str:
    """The name of the Redis list holding ``queue``'s tasks of priority ``step``."""
    return queue if step == 0 else f"{queue}{REDIS_PRIORITY_SEP}{step}"


def redis_client(url: str, timeout: float = 1.0) -> Any:
    """One Redis client (and its connection pool) per broker URL and process,
    made on first use, so a forked worker child makes its own."""
    client = _redis_clients.get(url)
    if client is None:
        import redis

        client = _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=timeout,
                                                            socket_connect_timeout=timeout)
    return client


def forget_redis_client(url: str) -> None:
    """After an error: the next call starts from a new connection."""
    _redis_clients.pop(url, None)
