"""Delivered, bounced, complained, skipped, digested, fell back: on the dashboard
(table and chart), in Prometheus and in ``dispatcher_status``, all from the
same queries."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.utils import timezone

from dispatcher.api import fallback_chain, recipients, schedule_messages, suppress
from dispatcher.delivery import deliver_batch
from dispatcher.receipts.core import BOUNCED, COMPLAINED, DELIVERED, Receipt, record
from tests.operator.test_metrics import samples, value
from tests.testapp.message_types import CommentDigestMessage

pytestmark = pytest.mark.django_db

URL = "/dispatcher/ops/"


@pytest.fixture
def beyond():
    """Three receipts (the bounce and the complaint suppress their address), two
    skips, three digested notifications, one fallback, one suppression by hand."""
    [(_, sent)] = schedule_messages("hello", recipients("flaky", ["ok/1", "ok/2", "ok/3"]))
    deliver_batch("flaky", [d.pk for d in sent])
    now = timezone.now()
    for dispatch, event in zip(sent, (DELIVERED, BOUNCED, COMPLAINED), strict=True):
        record(dispatch, Receipt(event, now, "test", event != DELIVERED), "postmark")
    for _ in range(3):
        schedule_messages("disk full", recipients("flaky", "ok/4"), throttle_key="disk",
                          throttle=timedelta(hours=1))
    for address, text in (("a@example.org", "one"), ("a@example.org", "two"), ("b@example.org", "three")):
        schedule_messages(CommentDigestMessage({"author": "x", "text": text}), recipients("smtp", address))
    [(_, [first])] = schedule_messages("hi", fallback_chain("perm/9", ["flaky", "mymessenger"]))
    deliver_batch("flaky", [first.pk])
    suppress("smtp", "gone@example.org", "bounce")
    return SimpleNamespace(first=first)


EXPECTED = {"flaky": {"delivered": 1, "bounced": 1, "complained": 1, "skipped": 2, "digested": 0,
                      "fell_back": 1},
            "smtp": {"delivered": 0, "bounced": 0, "complained": 0, "skipped": 0, "digested": 3,
                     "fell_back": 0}}


def test_the_dashboard_shows_them_in_a_table_and_a_chart(staff_client, beyond):
    page = staff_client.get(URL).content.decode()
    table = re.search(r'<table id="outcomes-table">(.*?)</table>', page, re.S).group(1)
    for alias, row in EXPECTED.items():
        cells = re.search(rf'<tr data-messenger="{alias}">(.*?)</tr>', table, re.S).group(1)
        assert re.findall(r'<td class="dd-num">(\d+)</td>', cells) == [str(n) for n in row.values()]
    totals = re.search(r'<tr id="outcomes-totals">(.*?)</tr>', table, re.S).group(1)
    assert re.findall(r'<td class="dd-num">(\d+)</td>', totals) == ["1", "1", "1", "2", "3", "1"]
    assert "3 notifications waiting in open digest windows" in page
    assert "suppressed addresses: email 1, flaky 2." in page
    chart = json.loads(re.search(r'<script id="outcomes-data" type="application/json">(.*?)</script>',
                                 page, re.S).group(1))
    assert len(chart["labels"]) == 60
    assert {name: sum(points) for name, points in chart["series"].items()} == {
        "delivered": 1, "bounced": 1, "complained": 1, "skipped": 2, "digested": 3, "fell back": 1}
    # The skipped dispatches are also a column of the status table.
    counts = re.search(r'<tr data-messenger="flaky">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r'<td class="dd-num[^"]*">([^<]*)</td>', counts)[6] == "2"


def test_prometheus_exposes_them(staff_client, beyond):
    found = samples(staff_client.get(URL + "metrics").content.decode())
    for event in ("delivered", "bounced", "complained"):
        assert value(found, "dispatcher_receipts", messenger="flaky", event=event) == 1
    for alias, row in EXPECTED.items():
        for outcome, n in row.items():
            assert value(found, "dispatcher_outcomes", messenger=alias, outcome=outcome) == n
    assert value(found, "dispatcher_digest_items_waiting") == 3
    assert value(found, "dispatcher_suppressed_addresses", kind="email") == 1
    assert value(found, "dispatcher_suppressed_addresses", kind="flaky") == 2
    assert value(found, "dispatcher_dispatches", messenger="flaky", status="skipped") == 2


def test_dispatcher_status_prints_them(beyond):
    out = StringIO()
    call_command("dispatcher_status", "--format", "json", "--no-broker", stdout=out)
    data = json.loads(out.getvalue())
    assert data["outcomes"]["by_messenger"] == EXPECTED
    assert data["outcomes"]["totals"] == {"delivered": 1, "bounced": 1, "complained": 1, "skipped": 2,
                                          "digested": 3, "fell_back": 1}
    assert data["outcomes"]["suppressed_addresses"] == {"email": 1, "flaky": 2}
    assert data["messengers"]["flaky"]["counts"]["skipped"] == 2
    table = StringIO()
    call_command("dispatcher_status", "--no-broker", stdout=table)
    lines = table.getvalue().splitlines()
    assert "receipts: delivered 1, bounced 1, complained 1" in lines
    assert "skipped (throttled): 2; fell back: 1" in lines
    assert "digested: 3 (3 waiting in open windows)" in lines
    assert "suppressed addresses: email 1, flaky 2" in lines


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_what_real_workers_did_is_counted_on_the_dashboard_in_prometheus_and_the_status(workers, sink,
                                                                                       staff_client):
    """The same outcomes when they come from worker processes, not from calls
    in the test: a worker sends what the throttle let through, fails a
    dispatch and falls back to the next channel, and closes a digest window
    (beat's task) into one mail; then the three places count them."""
    from celery import current_app

    from dispatcher.models import DigestWindow, Dispatch
    from tests.services import wait_for

    workers("outcomes", smtp_port=sink.port)
    for _ in range(3):
        schedule_messages("disk full", recipients("flaky", "ok/4"), throttle_key="disk",
                          throttle=timedelta(hours=1))
    schedule_messages("hi", fallback_chain("perm/9", ["flaky", "mymessenger"]))
    for text in ("one", "two", "three"):
        schedule_messages(CommentDigestMessage({"author": "x", "text": text}),
                          recipients("smtp", "a@example.org"))
    DigestWindow.objects.update(closes_at=timezone.now())
    current_app.send_task("dispatcher.close_digests", queue="dispatcher")

    def settled() -> bool:
        statuses = sorted(Dispatch.objects.values_list("messenger", "status"))
        return statuses == [("flaky", "failed"), ("flaky", "sent"), ("flaky", "skipped"),
                            ("flaky", "skipped"), ("mymessenger", "sent"), ("smtp", "sent")]

    wait_for(settled, 60, 0.2, "the workers to send, fail, fall back and close the digest")
    wait_for(lambda: len(sink.messages) == 1, 10)
    assert sink.messages[0].get_content().splitlines()[0] == "3 new comments:"

    expected = {"flaky": {"delivered": 0, "bounced": 0, "complained": 0, "skipped": 2, "digested": 0,
                          "fell_back": 1},
                "smtp": {"delivered": 0, "bounced": 0, "complained": 0, "skipped": 0, "digested": 3,
                         "fell_back": 0}}
    page = staff_client.get(URL).content.decode()
    table = re.search(r'<table id="outcomes-table">(.*?)</table>', page, re.S).group(1)
    for alias, row in expected.items():
        cells = re.search(rf'<tr data-messenger="{alias}">(.*?)</tr>', table, re.S).group(1)
        assert re.findall(r'<td class="dd-num">(\d+)</td>', cells) == [str(n) for n in row.values()]
    chart = json.loads(re.search(r'<script id="outcomes-data" type="application/json">(.*?)</script>',
                                 page, re.S).group(1))
    assert {name: sum(points) for name, points in chart["series"].items()} == {
        "delivered": 0, "bounced": 0, "complained": 0, "skipped": 2, "digested": 3, "fell back": 1}
    found = samples(staff_client.get(URL + "metrics").content.decode())
    assert value(found, "dispatcher_outcomes", messenger="flaky", outcome="fell_back") == 1
    assert value(found, "dispatcher_outcomes", messenger="smtp", outcome="digested") == 3
    assert value(found, "dispatcher_digest_items_waiting") == 0
    out = StringIO()
    call_command("dispatcher_status", "--format", "json", "--no-broker", stdout=out)
    assert json.loads(out.getvalue())["outcomes"]["by_messenger"] == expected
