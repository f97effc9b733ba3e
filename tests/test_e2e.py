"""End to end: real Celery worker processes, a real broker, a real SMTP server."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter

import pytest
from celery import current_app
from django.utils import timezone

from dispatcher.api import recipients, schedule_messages
from dispatcher.models import Dispatch
from dispatcher.publish import DELIVER_TASK, dispatch_queue
from tests.services import wait_for
from tests.testapp.message_types import HelloMessage

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def statuses() -> Counter:
    return Counter(Dispatch.objects.values_list("status", flat=True))


def test_worker_delivers_200_emails_exactly_once(workers, sink):
    workers("one", smtp_port=sink.port)
    addresses = [f"user{i}@example.org" for i in range(200)]
    messages = [HelloMessage({"subject": f"Subject {i}"}) for i in range(2)]
    schedule_messages(messages[0], recipients("smtp", addresses[:100]))
    schedule_messages(messages[1], recipients("smtp", addresses[100:]))

    wait_for(lambda: statuses() == {"sent": 200}, 90, 0.3, "all 200 dispatches to be sent")
    wait_for(lambda: len(sink.messages) >= 200, 10)
    received = Counter(m["To"] for m in sink.messages)
    assert received == Counter(addresses)  # each arrives exactly once
    for mail in sink.messages:
        i = int(mail["To"].removeprefix("user").split("@")[0])
        batch = 0 if i < 100 else 1
        assert mail["Subject"] == f"Subject {batch}"
        assert mail.get_content().strip() == f"Body for user{i}@example.org"


def test_two_workers_given_the_same_ids_send_each_once(workers, sink):
    later = timezone.now() + dt.timedelta(hours=1)
    # Scheduled for later, so nothing is published yet; then due now, and the
    # same ids handed to both workers at once.
    [(_, dispatches)] = schedule_messages(
        "same batch", recipients("smtp", [f"u{i}@example.org" for i in range(50)]), send_at=later
    )
    ids = [d.pk for d in dispatches]
    Dispatch.objects.filter(pk__in=ids).update(next_attempt_at=later.replace(year=2000))
    workers("a", smtp_port=sink.port)
    workers("b", smtp_port=sink.port)
    for _ in range(4):
        current_app.send_task(DELIVER_TASK, args=("smtp", ids), queue=dispatch_queue("smtp"))

    wait_for(lambda: statuses() == {"sent": 50}, 60, 0.3, "all 50 sent")
    wait_for(lambda: len(sink.messages) >= 50, 10)
    time.sleep(1.5)  # give a would-be duplicate the time to arrive
    assert Counter(m["To"] for m in sink.messages) == Counter(d.address for d in dispatches)


def test_seed_messenger_through_a_worker(workers, django_user_model):
    user2 = django_user_model.objects.create(username="user2")
    workers("seed")
    schedule_messages("Some plain text message", recipients("mymessenger", ["user1--address", user2]))
    wait_for(lambda: statuses() == {"sent": 2}, 60, 0.3, "both seed dispatches sent")
    assert sorted(Dispatch.objects.values_list("address", flat=True)) == ["user1--address", "user2--address"]
