"""The sweeps: lost tasks republished, expired leases taken back, old rows
cleaned up, undelivered dispatches reported, and their beat schedule."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.core import mail
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from dispatcher import partitions
from dispatcher.beat import PERIODIC_TASKS
from dispatcher.models import Dispatch, DispatchError, Message
from dispatcher.sweeps import cleanup_sent, reclaim_expired_leases, report_undelivered, requeue_due
from tests.test_guarantees import deliver, schedule, state

pytestmark = pytest.mark.django_db


# -- leases ---------------------------------------------------------------------------
def test_expired_lease_out_of_attempts_becomes_failed():
    [dispatch] = schedule("flaky", ["ok/1"])
    Dispatch.objects.filter(pk=dispatch.pk).update(
        status="processing", attempts=8, lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert reclaim_expired_leases() == 1
    assert state(dispatch) == ("failed", 8)


def test_live_lease_is_left_alone():
    [dispatch] = schedule("flaky", ["ok/1"])
    Dispatch.objects.filter(pk=dispatch.pk).update(
        status="processing", attempts=1, lease_expires_at=timezone.now() + dt.timedelta(minutes=1)
    )
    assert reclaim_expired_leases() == 0
    assert state(dispatch) == ("processing", 1)


# -- sweeps ---------------------------------------------------------------------------
@override_settings(DISPATCHER_REQUEUE_AFTER=60)
def test_requeue_due_picks_lost_and_due_rows_only(django_capture_on_commit_callbacks):
    fresh, lost, retry, future, sent = schedule("flaky", [f"ok/{i}" for i in range(5)])
    now = timezone.now()
    Dispatch.objects.filter(pk=lost.pk).update(queued_at=now - dt.timedelta(minutes=5))
    Dispatch.objects.filter(pk=retry.pk).update(status="error", queued_at=None)
    Dispatch.objects.filter(pk=future.pk).update(queued_at=None, next_attempt_at=now + dt.timedelta(hours=1))
    Dispatch.objects.filter(pk=sent.pk).update(status="sent", queued_at=None)
    with django_capture_on_commit_callbacks() as callbacks:
        assert requeue_due() == 2
    assert len(callbacks) == 1  # one publish, after the commit
    requeued = set(Dispatch.objects.filter(queued_at__gte=now).values_list("pk", flat=True))
    assert {lost.pk, retry.pk} <= requeued and future.pk not in requeued and sent.pk not in requeued
    assert requeue_due() == 0  # now held by the tasks just published


def test_cleanup_sent_deletes_old_sent_rows_in_chunks():
    dispatches = schedule("flaky", [f"ok/{i}" for i in range(5)])
    old = timezone.now() - dt.timedelta(days=40)
    Dispatch.objects.filter(pk__in=[d.pk for d in dispatches[:3]]).update(status="sent", dispatched_at=old)
    Dispatch.objects.filter(pk=dispatches[3].pk).update(status="sent", dispatched_at=timezone.now())
    if partitions.is_partitioned():
        # PostgreSQL: this month's partition is dropped whole once the month is past
        # retention, so cleanup_sent leaves its rows to that DROP. Where it does delete
        # there (a month kept for an unfinished row, the default partition), in chunks:
        # tests/test_partitions.py.
        assert cleanup_sent(days=30, chunk=2) == 0
        assert Dispatch.objects.count() == 5
        return
    assert cleanup_sent(days=30, chunk=2) == 3
    assert Dispatch.objects.count() == 2
    assert Message.objects.count() == 1


@override_settings(ADMINS=[("Ops", "ops@example.org")])
def test_report_undelivered_mails_admins():
    schedule("flaky", ["perm/1", "perm/2", "ok/3"])
    deliver("flaky", list(Dispatch.objects.all()))
    assert report_undelivered() == 2
    [report] = mail.outbox
    assert report.to == ["ops@example.org"]
    assert "2 dispatches failed" in report.body and "flaky: 2" in report.body
    assert "scripted permanent failure" in report.body


def test_no_report_when_nothing_failed():
    assert report_undelivered() == 0
    assert mail.outbox == []


def test_periodic_tasks_exist_after_migrate():
    tasks = dict(PeriodicTask.objects.values_list("name", "task"))
    for name, (task, _) in PERIODIC_TASKS.items():
        assert tasks[name] == task


@pytest.mark.django_db(transaction=True)
@override_settings(DISPATCHER_LEASE_SECONDS=1)
def test_a_live_batch_keeps_its_lease_however_long_it_runs():
    """The lease is renewed while the batch runs, so a slow send is never
    taken back (and sent twice) while its worker is alive."""
    [dispatch] = schedule("flaky", ["slow:2500/1"])  # one send of 2.5 s, with a lease of 1 s
    reclaimed: list[int] = []

    def sweep_meanwhile() -> None:
        try:
            deadline = time.monotonic() + 2.3
            while time.monotonic() < deadline:
                reclaimed.append(reclaim_expired_leases())
                time.sleep(0.2)
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep_meanwhile)
    sweeper.start()
    deliver("flaky", [dispatch])
    sweeper.join()
    assert len(reclaimed) > 5 and sum(reclaimed) == 0
    assert state(dispatch) == ("sent", 1)
    assert not DispatchError.objects.filter(dispatch=dispatch).exists()
