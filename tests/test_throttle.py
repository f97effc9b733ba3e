"""Throttle keys: at most one message per key and address per period; the
others are SKIPPED dispatches that say why, never sent. Decided by the
database, so concurrent producers in several processes send one."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import InvalidArgument
from dispatcher.models import Dispatch, Message, ThrottleMark
from dispatcher.throttle import cleanup
from tests import producers
from tests.services import wait_for, worker_env
from tests.testapp.message_types import HelloMessage

pytestmark = pytest.mark.django_db

HOURS3 = timedelta(hours=3)


def report(subject: str, addresses, key: str = "error-report", period=HOURS3):
    [(message, dispatches)] = schedule_messages(
        HelloMessage({"subject": subject}), recipients("smtp", addresses), throttle_key=key, throttle=period)
    return message, dispatches


def test_one_message_per_key_and_address_per_period_the_rest_skipped(smtp_server):
    _, [first] = report("Error 1", "admin@example.org")
    _, [second] = report("Error 2", "admin@example.org")
    assert (first.status, second.status) == ("pending", "skipped")
    mark = ThrottleMark.objects.get()
    assert second.result == {"skipped": "throttled", "throttle_key": "error-report",
                             "until": mark.until.isoformat()}
    assert abs((mark.until - first.created) - HOURS3) < timedelta(seconds=1)
    # A skipped dispatch is never claimed nor sent.
    deliver_batch("smtp", [first.pk, second.pk])
    assert sorted(Dispatch.objects.values_list("status", flat=True)) == ["sent", "skipped"]
    assert [m["Subject"] for m in smtp_server.messages] == ["Error 1"]


def test_other_addresses_and_other_keys_are_not_held_back():
    report("Error 1", ["a@example.org", "b@example.org"])
    _, ds = report("Error 2", ["b@example.org", "c@example.org"])
    assert [(d.address, d.status) for d in ds] == [("c@example.org", "pending"), ("b@example.org", "skipped")]
    _, [other_key] = report("Disk full", "a@example.org", key="disk")
    assert other_key.status == "pending"
    [(_, [unthrottled])] = schedule_messages(HelloMessage({"subject": "Hi"}),
                                             recipients("smtp", "a@example.org"))
    assert unthrottled.status == "pending"


def test_on_postgresql_the_key_costs_no_statement_of_its_own():
    """The mark is written by the message's own INSERT there (a CTE), so a
    throttled call is as many round trips as a plain one (the benchmark's
    10 %); SQLite has no data-modifying CTE and takes one statement more.
    The decision is the same either way, a duplicate address included."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def statements(**throttle) -> int:
        with CaptureQueriesContext(connection) as queries:
            schedule_messages(HelloMessage({"subject": "x"}), recipients("smtp", "ops@example.org"),
                              **throttle)
        return len(queries.captured_queries)

    plain = statements()
    throttled = statements(throttle_key="k1", throttle=HOURS3)
    assert throttled == plain + (0 if connection.vendor == "postgresql" else 1)
    message, ds = report("again", ["ops@example.org", "new@example.org", "new@example.org"], key="k1")
    assert [(d.address, d.status) for d in ds] == [("new@example.org", "pending"),
                                                    ("ops@example.org", "skipped"),
                                                    ("new@example.org", "skipped")]
    assert Message.objects.get(pk=message.pk).context == {"subject": "again"}
    assert {d.message_id for d in ds} == {message.pk}


@pytest.mark.django_db(transaction=True)
def test_racing_retries_of_one_idempotent_throttled_call_make_one_message():
    """Four threads repeat one call (same idempotency key, same throttle key)
    at once: the losers' INSERT of the message fails on the key, taking their
    mark with it (one statement on PostgreSQL), and they return the winner's
    rows: one message, one dispatch sent, nothing skipped."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(4)
    results: list = []
    errors: list = []

    def call():
        try:
            barrier.wait()
            results.append(schedule_messages(
                HelloMessage({"subject": "x"}), recipients("smtp", "ops@example.org"),
                idempotency_key="retry-1", throttle_key="k", throttle=HOURS3))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Message.objects.filter(idempotency_key="retry-1").count() == 1
    assert list(Dispatch.objects.values_list("status", flat=True)) == ["pending"]
    assert len({r[0][0].pk for r in results}) == 1 and ThrottleMark.objects.count() == 1


def test_once_the_period_is_over_the_next_one_goes():
    report("Error 1", "admin@example.org")
    ThrottleMark.objects.update(until=timezone.now() - timedelta(seconds=1))  # three hours later
    _, [later] = report("Error 2", "admin@example.org")
    _, [soon_after] = report("Error 3", "admin@example.org")
    assert (later.status, soon_after.status) == ("pending", "skipped")
    assert ThrottleMark.objects.get().until > timezone.now() + HOURS3 - timedelta(minutes=1)


def test_the_same_address_twice_in_one_call_goes_once():
    _, ds = report("Error", ["x@example.org", "x@example.org"])
    assert sorted(d.status for d in ds) == ["pending", "skipped"]


def test_a_rolled_back_schedule_leaves_no_mark():
    with pytest.raises(RuntimeError), transaction.atomic():
        report("Error 1", "admin@example.org")
        raise RuntimeError("the caller's transaction fails")
    assert not ThrottleMark.objects.exists() and not Message.objects.exists()
    _, [sent] = report("Error 2", "admin@example.org")
    assert sent.status == "pending"


def test_bad_throttle_arguments_are_refused_before_anything_is_written():
    who = recipients("smtp", "a@example.org")
    bad = [{"throttle_key": "k"}, {"throttle": HOURS3}, {"throttle_key": "", "throttle": HOURS3},
           {"throttle_key": "k", "throttle": timedelta(0)}, {"throttle_key": "k", "throttle": 3600},
           {"throttle_key": "k" * 201, "throttle": HOURS3}, {"throttle_key": "a\nb", "throttle": HOURS3}]
    for kwargs in bad:
        with pytest.raises(InvalidArgument):
            schedule_messages("hi", who, **kwargs)
    assert not Message.objects.exists() and not ThrottleMark.objects.exists()


def test_expired_marks_are_forgotten():
    report("Error", ["a@example.org", "b@example.org"])
    ThrottleMark.objects.filter(address="a@example.org").update(until=timezone.now() - timedelta(minutes=1))
    assert cleanup(timezone.now()) == 1
    assert list(ThrottleMark.objects.values_list("address", flat=True)) == ["b@example.org"]


def test_skipped_dispatches_are_listed_in_the_admin(admin_client):
    report("Error 1", "admin@example.org")
    _, [skipped] = report("Error 2", "admin@example.org")
    page = admin_client.get("/admin/dispatcher/dispatch/?status__exact=skipped")
    assert page.status_code == 200
    assert f"/admin/dispatcher/dispatch/{skipped.pk}/change/".encode() in page.content
    detail = admin_client.get(f"/admin/dispatcher/dispatch/{skipped.pk}/change/")
    assert b"throttled" in detail.content and b"error-report" in detail.content


@pytest.mark.django_db(transaction=True)
def test_parallel_producers_send_one_per_key_and_address(tmp_path):
    """Six processes schedule the same key to the same five addresses, ten
    times each, all at once: five dispatches go, the 295 others are skipped."""
    addresses = [f"ops{i}@example.org" for i in range(5)]
    jobs = [("throttle", {"rounds": 10, "addresses": addresses, "key": "nightly-errors"})] * 6
    results = producers.run(jobs, worker_env(), tmp_path)
    assert sum(r["calls"] for r in results) == 60
    counts = Counter(Dispatch.objects.values_list("address", "status"))
    expected = {**{(a, "pending"): 1 for a in addresses}, **{(a, "skipped"): 59 for a in addresses}}
    assert counts == Counter(expected)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_only_what_the_throttle_let_through(workers, sink):
    workers("throttle", smtp_port=sink.port)
    for i in range(5):
        report(f"Error {i}", ["oncall@example.org", "lead@example.org"], key="errors")
    wait_for(lambda: Counter(Dispatch.objects.values_list("status", flat=True)) == {"sent": 2, "skipped": 8},
             60, 0.2, "2 sent, 8 skipped")
    wait_for(lambda: len(sink.messages) >= 2, 10)
    assert sorted((m["To"], m["Subject"]) for m in sink.messages) == [
        ("lead@example.org", "Error 0"), ("oncall@example.org", "Error 0")]
