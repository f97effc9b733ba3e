"""Celery tasks: thin glue over ``dispatcher`` functions.

Importing the package registers every task: the repository's app includes
``tasks``, and the wheel installs this package as ``dispatcher.tasks``, which a
site's ``app.autodiscover_tasks()`` imports. Hence relative imports only.
"""

from . import beyond, delivery, events, sweeps

__all__ = ["beyond", "delivery", "events", "sweeps"]
