"""The repository's Celery app: ``celery -A config worker`` / ``celery -A config beat``.

A site of its own, made like any other (README, "Use it in your own
project"): the dispatcher's queues and connection handling come from
:func:`dispatcher.celery.setup_celery`. The tasks live in ``tasks/`` here and
are installed as ``dispatcher/tasks/`` by the wheel, where a site's
``app.autodiscover_tasks()`` finds them.
"""

import os

from celery import Celery

from dispatcher.celery import setup_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("dispatcher", include=["tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
setup_celery(app)
