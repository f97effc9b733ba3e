"""What every site's Celery app needs for the dispatcher: ``setup_celery(app)``.

A site owns its Celery app (``mysite/celery.py``, as Celery's Django guide
makes it); the dispatcher adds to it, it does not replace it::

    app = Celery("mysite")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()          # finds dispatcher.tasks among the apps
    setup_celery(app)

``setup_celery`` connects two worker signal handlers and sets one default:

- each messenger gets its own queue, ``dispatch.<alias>``, so a slow transport
  never starves a fast one; a worker started without ``-Q`` consumes all of
  them, the ``dispatcher`` queue (sweeps, model events) and the app's default
  queue, plus whatever queues the site declares itself;
- database connections are recycled around each task, as Django does around
  each request, instead of being closed after every task by Celery's Django
  fixup (``CELERY_DB_REUSE_MAX``, a default the site's settings may override).

Nothing here reads settings or the registry when it is imported or called:
the site's Celery app is created while its settings module is being loaded.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections
from kombu import Queue

from .queues import HOUSEKEEPING_QUEUE, dispatch_queue
from .registry import get_registered_messenger_objects

__all__ = ["queue_names", "setup_celery"]

#: Celery's Django fixup closes every database connection after every task
#: unless this is set, and opening one costs more than a whole small batch.
DB_REUSE_MAX = 10_000


def setup_celery(app: Celery) -> Celery:
    """Make ``app`` (the site's Celery app) run the dispatcher's workers well.

    Call it once, where the app is created. Returns the app.
    """
    app.add_defaults({"CELERY_DB_REUSE_MAX": DB_REUSE_MAX})
    # dispatch_uid: calling it twice (two apps, a reloaded module) connects once.
    signals.celeryd_init.connect(_declare_messenger_queues, weak=False,
                                 dispatch_uid="dispatcher.declare_messenger_queues")
    signals.task_prerun.connect(_recycle_connections, weak=False, dispatch_uid="dispatcher.recycle_prerun")
    signals.task_postrun.connect(_recycle_connections, weak=False, dispatch_uid="dispatcher.recycle_postrun")
    _quiet_file_broker_hostname(app)
    return app


class _FileBrokerHostname(logging.Filter):
    """Drops kombu's "No hostname was supplied" for the file broker, and only for it.

    kombu logs it (a WARNING) every time a connection's URL is read, so on
    every publish, when the URL has no host; ``filesystem://`` has none
    because the file transport has no use for one. Any other transport
    without a host still gets the warning.
    """

    def __init__(self, app: Celery) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("No hostname was supplied"):
            return True
        return not str(self.app.conf.broker_url or "").startswith("filesystem:")


def _quiet_file_broker_hostname(app: Celery) -> None:
    kombu_logger = logging.getLogger("kombu.connection")
    if not any(isinstance(f, _FileBrokerHostname) for f in kombu_logger.filters):
        kombu_logger.addFilter(_FileBrokerHostname(app))


def queue_names(default_queue: str) -> list[str]:
    """The queues a worker started without ``-Q`` consumes: the app's default
    queue, ``dispatcher`` and one ``dispatch.<alias>`` per registered messenger."""
    names = [default_queue, HOUSEKEEPING_QUEUE]
    names += sorted(dispatch_queue(alias) for alias in get_registered_messenger_objects())
    return list(dict.fromkeys(names))


def _declare_messenger_queues(conf: Any, **kwargs: Any) -> None:
    # Runs after django.setup() (the Django fixup imports the apps first) and
    # before the worker selects its queues, so registered messengers are known.
    declared = list(conf.task_queues or [])
    known = {queue.name for queue in declared}
    declared += [Queue(name, routing_key=name) for name in queue_names(conf.task_default_queue)
                 if name not in known]
    conf.task_queues = declared


def _recycle_connections(**kwargs: Any) -> None:
    # What Django does around each request: drop connections that errored or
    # outlived CONN_MAX_AGE, so a database restart costs one task, not all.
    close_old_connections()
