"""Worker settings with JSON logs, switched on the way an operator does it:
``DISPATCHER_LOG_FORMAT=json`` (config/settings.py does the wiring)."""

import os

os.environ["DISPATCHER_LOG_FORMAT"] = "json"

from tests.worker_settings import *  # noqa: E402,F403
