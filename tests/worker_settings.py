"""Settings for Celery worker processes started by the tests.

Production settings plus the tests' own messengers and models; the database,
broker and SMTP port come from the environment the test fixtures set.
"""

import json
import os

# Production settings refuse to start without a secret key (DEBUG is off
# unless asked for), and redirect plain HTTP to HTTPS. The tests run with
# DEBUG off, a key of their own and plain HTTP; every process they start
# (workers, manage.py) inherits these.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-" + "x9Qm2vL7pR4tW8zK" * 3)
os.environ.setdefault("DJANGO_HTTPS", "0")

from config.settings import *  # noqa: E402,F403
from config.settings import DISPATCHER_MESSENGERS, INSTALLED_APPS  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

DISPATCHER_MESSENGERS = {
    **DISPATCHER_MESSENGERS,
    "mymessenger": {"class": "tests.seed_messenger.MyMessenger", "options": {}},
    "sitestyle": {"class": "tests.seed_messenger.SitemessageStyleMessenger", "options": {}},
    "flaky": {"class": "tests.testapp.messengers.ScriptedMessenger", "options": {}},
    "broken_before": {"class": "tests.testapp.messengers.ScriptedMessenger",
                      "options": {"fail_in": "before_send"}},
    "broken_send": {"class": "tests.testapp.messengers.ScriptedMessenger",
                    "options": {"fail_in": "send", "fail_after": 3}},
    "broken_after": {"class": "tests.testapp.messengers.ScriptedMessenger",
                     "options": {"fail_in": "after_send"}},
    "interrupted": {"class": "tests.testapp.messengers.ScriptedMessenger",
                    "options": {"fail_in": "interrupt", "fail_after": 2}},
}

DISPATCHER_WATCHED_MODELS = ["testapp.profile"]

# Tests configure extra messengers (pointing at their own loopback servers) in
# worker processes through the environment: {"alias": {"class": ..., "options": ...}}.
DISPATCHER_MESSENGERS.update(json.loads(os.environ.get("TEST_EXTRA_MESSENGERS", "{}")))
