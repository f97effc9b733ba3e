"""Settings for Celery worker processes started by the tests.

Production settings plus the tests' own messengers and models; the database,
broker and SMTP port come from the environment the test fixtures set.
"""

from config.settings import *  # noqa: F403
from config.settings import DISPATCHER_MESSENGERS, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

DISPATCHER_MESSENGERS = {
    **DISPATCHER_MESSENGERS,
    "mymessenger": {"class": "tests.seed_messenger.MyMessenger", "options": {}},
    "flaky": {"class": "tests.testapp.messengers.ScriptedMessenger", "options": {}},
}
