"""``manage.py dispatcher_report_undelivered`` says what it did: mailed to whom, or why not."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import override_settings

from dispatcher.models import Dispatch
from tests.test_guarantees import deliver, schedule

pytestmark = pytest.mark.django_db


def report() -> str:
    out = StringIO()
    call_command("dispatcher_report_undelivered", "--hours", "24", stdout=out)
    return out.getvalue().strip()


def failed_two() -> None:
    schedule("flaky", ["perm/1", "perm/2", "ok/3"])
    deliver("flaky", list(Dispatch.objects.all()))


@override_settings(ADMINS=[])
def test_without_admins_it_says_nobody_got_the_report():
    failed_two()
    assert report() == ("2 dispatches failed in the last 24 hours; "
                        "not reported: ADMINS is empty (DJANGO_ADMINS here)")
    assert mail.outbox == []


@override_settings(ADMINS=[("Ops", "ops@example.org"), ("Lead", "lead@example.org")])
def test_with_admins_it_names_them():
    failed_two()
    assert report() == ("2 dispatches failed in the last 24 hours; "
                        "reported to ops@example.org, lead@example.org")
    [sent] = mail.outbox
    assert sent.to == ["ops@example.org", "lead@example.org"]


@override_settings(ADMINS=[("Ops", "ops@example.org")])
def test_nothing_failed():
    assert report() == "no dispatch failed in the last 24 hours: nothing to report"
    assert mail.outbox == []
