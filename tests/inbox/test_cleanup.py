"""``manage.py inbox_cleanup --days N``: what both sides deleted long enough ago goes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dispatcher.inbox.api import PrivateMessage, pm_write
from tests.services import BASE

pytestmark = pytest.mark.django_db


def ago(days: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)


def write(users, subject, sender_deleted=None, recipient_deleted=None, **kw):
    message = pm_write(users.ann, users.bob, subject, skip_notification=True, **kw)
    PrivateMessage.objects.filter(pk=message.pk).update(
        sender_deleted_at=sender_deleted, recipient_deleted_at=recipient_deleted
    )
    return message


def remaining() -> set[str]:
    return set(PrivateMessage.objects.values_list("subject", flat=True))


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("inbox_cleanup", *args, stdout=out)
    return out.getvalue()


def test_removes_only_what_both_sides_deleted_long_enough_ago(users):
    write(users, "both old", ago(40), ago(31))
    write(users, "one side only", ago(40), None)
    write(users, "both, one recent", ago(40), ago(2))
    write(users, "kept", None, None)
    visitor = pm_write(users.ann, "guest@example.org", "to a visitor", skip_notification=True)
    PrivateMessage.objects.filter(pk=visitor.pk).update(sender_deleted_at=ago(31))

    assert "would delete 2 private messages" in run("--days", "30", "--dry-run")
    assert len(remaining()) == 5
    assert "deleted 2 private messages" in run("--days", "30")
    assert remaining() == {"one side only", "both, one recent", "kept"}
    assert "deleted 1 private messages" in run("--days", "1")
    assert remaining() == {"one side only", "kept"}


def test_a_conversation_goes_only_when_all_its_messages_do(users):
    first = write(users, "first", ago(40), ago(40))
    reply = pm_write(users.bob, users.ann, "reply", parent=first, skip_notification=True)
    PrivateMessage.objects.filter(pk=reply.pk).update(sender_deleted_at=ago(40))
    run("--days", "30")
    assert remaining() == {"first", "reply"}  # ann still has the reply

    PrivateMessage.objects.filter(pk=reply.pk).update(recipient_deleted_at=ago(40))
    run("--days", "30")
    assert remaining() == set()


def test_bad_arguments_fail():
    with pytest.raises(CommandError, match="--days"):
        call_command("inbox_cleanup", "--days", "-1")


def test_exits_non_zero_on_error():
    # A database that is not there: the command must fail loudly, not print "deleted 0".
    env = {"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin",
           "DJANGO_SECRET_KEY": os.environ["DJANGO_SECRET_KEY"]}
    proc = subprocess.run(
        [sys.executable, "manage.py", "inbox_cleanup", "--days", "1"],
        capture_output=True, text=True, env=env, timeout=60, cwd=BASE,
    )
    assert proc.returncode != 0
    assert "inbox_cleanup failed" in proc.stderr
