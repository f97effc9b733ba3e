"""The file broker (the embedded profile, a fresh clone's ``make run``) publishes without warnings.

kombu logs "No hostname was supplied. Reverting to default 'localhost'" each
time it reads a connection URL without a host, so on every publish over
``filesystem://``; ``setup_celery`` drops that record for the file broker,
whose transport has no host, and only for it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from dispatcher.celery import _FileBrokerHostname
from tests.services import BASE

PUBLISH = """
import django, logging
django.setup()
from config.celery import app
{before}
app.send_task("dispatcher.requeue_due", queue="dispatcher")
app.send_task("dispatcher.requeue_due", queue="dispatcher")
print("published")
"""


def publish(var_dir: Path, before: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_DEBUG="1", DISPATCHER_VAR_DIR=str(var_dir),
               CELERY_BROKER_URL="filesystem://")
    return subprocess.run([sys.executable, "-c", PUBLISH.format(before=before)], cwd=BASE, env=env,
                          capture_output=True, text=True, timeout=120, check=True)


def test_a_publish_over_the_file_broker_prints_no_warning(tmp_path):
    done = publish(tmp_path / "var")
    assert done.stdout.strip() == "published"
    assert done.stderr == ""
    assert len(list((tmp_path / "var" / "broker" / "queue").iterdir())) == 2


def test_without_the_filter_kombu_warns(tmp_path):
    # What the filter is for: the same publish, the filter taken away.
    done = publish(tmp_path / "var", before='logging.getLogger("kombu.connection").filters.clear()')
    assert "No hostname was supplied" in done.stderr


def test_other_brokers_keep_the_warning():
    record = logging.LogRecord("kombu.connection", logging.WARNING, __file__, 1,
                               "No hostname was supplied. Reverting to default 'localhost'", None, None)
    other = logging.LogRecord("kombu.connection", logging.WARNING, __file__, 1, "something else", None, None)

    def app(url: str) -> SimpleNamespace:
        return SimpleNamespace(conf=SimpleNamespace(broker_url=url))

    assert not _FileBrokerHostname(app("filesystem://")).filter(record)
    assert _FileBrokerHostname(app("filesystem://")).filter(other)
    assert _FileBrokerHostname(app("redis://")).filter(record)
    assert _FileBrokerHostname(app("amqp://")).filter(record)
