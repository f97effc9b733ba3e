"""The Celery app: ``celery -A config worker`` / ``celery -A config beat``.

Every messenger gets its own queue, ``dispatch.<alias>``, so a slow transport
never starves a fast one. A worker started without ``-Q`` consumes all of
them: the queue list is built from the messenger registry once Django is set up.
"""

import os

from celery import Celery, signals
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("dispatcher", include=["tasks.delivery", "tasks.sweeps", "tasks.events"])
app.config_from_object("django.conf:settings", namespace="CELERY")


def dispatch_queue(alias: str) -> str:
    return f"dispatch.{alias}"


@signals.celeryd_init.connect
def _declare_messenger_queues(conf, **kwargs):
    # Runs after django.setup() (the Django fixup imports the apps first) and
    # before the worker selects its queues, so registered messengers are known.
    from dispatcher.registry import get_registered_messenger_objects

    default = conf.task_default_queue
    names = [default] + sorted(dispatch_queue(a) for a in get_registered_messenger_objects())
    conf.task_queues = [Queue(name, routing_key=name) for name in names]
