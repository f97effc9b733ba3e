"""The Celery app: ``celery -A config worker`` / ``celery -A config beat``.

Every messenger gets its own queue, ``dispatch.<alias>``, so a slow transport
never starves a fast one. A worker started without ``-Q`` consumes all of
them: the queue list is built from the messenger registry once Django is set up.
"""

import os

from celery import Celery, signals
from kombu import Queue

from dispatcher.queues import dispatch_queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("dispatcher", include=["tasks.delivery", "tasks.sweeps", "tasks.events"])
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fixup closes every database connection after every task
# unless this is set, and opening one costs more than a whole small batch.
# Connections are recycled here instead (see _recycle_connections below).
app.conf.CELERY_DB_REUSE_MAX = 10_000


@signals.celeryd_init.connect
def _declare_messenger_queues(conf, **kwargs):
    # Runs after django.setup() (the Django fixup imports the apps first) and
    # before the worker selects its queues, so registered messengers are known.
    # The registry is imported here, not at the top: it reads settings, and
    # this module is loaded while the settings themselves are.
    from dispatcher.registry import get_registered_messenger_objects

    default = conf.task_default_queue
    names = [default] + sorted(dispatch_queue(a) for a in get_registered_messenger_objects())
    conf.task_queues = [Queue(name, routing_key=name) for name in names]


@signals.task_prerun.connect
@signals.task_postrun.connect
def _recycle_connections(**kwargs):
    # What Django does around each request: drop connections that errored or
    # outlived CONN_MAX_AGE, so a database restart costs one task, not all.
    from django.db import close_old_connections

    close_old_connections()
