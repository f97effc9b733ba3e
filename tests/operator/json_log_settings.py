"""Worker settings with JSON logs: the wiring docs/configuration.md tells projects to use.

``DISPATCHER_LOG_FORMAT=json`` in config/settings.py should do the same:
a ``json`` formatter on the console handler, and Celery told to leave the
root logger alone (otherwise a worker replaces Django's handlers with its own
plain-text ones, and the JSON formatter never runs in workers).
"""

from tests.worker_settings import *  # noqa: F403
from tests.worker_settings import LOGGING as _BASE

LOGGING = {
    **_BASE,
    "formatters": {"json": {"()": "dispatcher.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
