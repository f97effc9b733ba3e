"""Worker settings with the optional sites framework installed (tests/inbox/test_e2e.py)."""

from tests.worker_settings import *  # noqa: F403
from tests.worker_settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.sites"]
SITE_ID = 1
