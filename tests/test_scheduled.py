"""Delivery without Celery (cron), and priorities that reach the broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from django.test import override_settings
from django.utils import timezone

from dispatcher.api import recipients, schedule_messages, send_scheduled_messages
from dispatcher.exceptions import UnknownMessenger
from dispatcher.messages import PlainTextMessage
from dispatcher.models import Dispatch, Message
from dispatcher.preemption import more_urgent_lists
from dispatcher.queues import broker_priority
from tests.services import BASE, SMTPServer, wait_for, worker_env
from tests.test_outages import SlowSink

pytestmark = pytest.mark.django_db


def statuses() -> Counter:
    return Counter(Dispatch.objects.values_list("status", flat=True))


@override_settings(DISPATCHER_PUBLISH_TASKS=False)
def test_cron_mode_sends_what_is_due_in_process(smtp_server):
    schedule_messages("from cron", recipients("smtp", [f"c{i}@example.org" for i in range(30)]))
    assert Dispatch.objects.filter(queued_at__isnull=False).count() == 30  # written, not published
    result = send_scheduled_messages()
    assert (result.claimed, result.sent, result.error, result.failed) == (30, 30, 0, 0)
    assert statuses() == {"sent": 30}
    assert sorted(m["To"] for m in smtp_server.messages) == sorted(f"c{i}@example.org" for i in range(30))
    assert send_scheduled_messages().claimed == 0  # nothing twice


@override_settings(DISPATCHER_PUBLISH_TASKS=False)
def test_priority_filter_and_unknown_messengers(smtp_server):
    urgent = PlainTextMessage("urgent")
    urgent.priority = 5
    schedule_messages(urgent, recipients("smtp", "u@example.org"))
    schedule_messages("routine", recipients("smtp", "r@example.org"))
    assert send_scheduled_messages(priority=5).sent == 1
    assert [m["To"] for m in smtp_server.messages] == ["u@example.org"]

    # A row for a messenger this process does not know (another site's, say).
    message = Message.objects.create(message_type="plain", context={"text": "x"})
    Dispatch.objects.create(message=message, messenger="elsewhere", address="x",
                            next_attempt_at=timezone.now())
    with pytest.raises(UnknownMessenger, match="elsewhere"):
        send_scheduled_messages()
    assert statuses()["pending"] == 2  # refused before anything was sent
    assert send_scheduled_messages(ignore_unknown_messengers=True).sent == 1
    assert Dispatch.objects.get(messenger="elsewhere").status == "pending"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_two_crons_at_once_send_nothing_twice():
    sink = SMTPServer(SlowSink())
    try:
        with override_settings(DISPATCHER_PUBLISH_TASKS=False):
            schedule_messages("twice?", recipients("smtp", [f"t{i}@example.org" for i in range(400)]))
        env = {**worker_env(sink.port), "DISPATCHER_PUBLISH_TASKS": "0"}
        command = [sys.executable, "manage.py", "dispatcher_send_scheduled"]
        runs = [subprocess.Popen(command, cwd=BASE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=180) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        sent = [int(out.split()[1].rstrip(",")) for out, _ in outputs]
        assert sum(sent) == 400 and all(sent), outputs  # both took part, neither sent the other's
        assert statuses() == {"sent": 400}
        wait_for(lambda: len(sink.messages) >= 400, 10)
        received = Counter(m["To"] for m in sink.messages)
        assert received == Counter(f"t{i}@example.org" for i in range(400))
    finally:
        sink.stop()


def test_priorities_map_to_each_brokers_order():
    assert broker_priority(9, "redis://x") == 0 and broker_priority(0, "redis://x") == 9  # Redis: 0 first
    assert broker_priority(9, "amqp://x") == 9 and broker_priority(0, "amqp://x") == 0  # RabbitMQ: 9 first
    assert broker_priority(50, "redis://x") == 0 and broker_priority(-3, "amqp://x") == 0
    assert broker_priority(5, "filesystem://") is None


def test_a_batch_asks_for_the_lists_of_more_urgent_tasks_only():
    # kombu's Redis lists: the queue's name for its most urgent step, then "\x06\x16" and the step.
    assert more_urgent_lists("dispatch.smtp", 0) == [
        "dispatch.smtp", "dispatch.smtp\x06\x163", "dispatch.smtp\x06\x166"]
    assert more_urgent_lists("dispatch.smtp", 5) == ["dispatch.smtp"]
    assert more_urgent_lists("dispatch.smtp", 9) == []  # nothing goes ahead of the most urgent


@pytest.mark.e2e
@pytest.mark.redis_broker
@pytest.mark.django_db(transaction=True)
def test_a_high_priority_message_overtakes_a_backlog(workers):
    sink = SMTPServer(SlowSink())
    try:
        with override_settings(DISPATCHER_FANOUT_TASKS=200, DISPATCHER_MIN_BATCH_SIZE=10):
            schedule_messages("backlog", recipients("smtp", [f"low{i}@example.org" for i in range(2000)]))
            urgent = PlainTextMessage("urgent")
            urgent.priority = 9
            schedule_messages(urgent, recipients("smtp", "urgent@example.org"))
        workers("prio", smtp_port=sink.port, concurrency=1)
        try:
            wait_for(lambda: any(m["To"] == "urgent@example.org" for m in sink.messages), 120, 0.05,
                     "the urgent mail")
        except AssertionError as exc:  # say where it is, should it ever not come
            urgent_rows = list(Dispatch.objects.filter(address="urgent@example.org").values())
            raise AssertionError(f"{exc}; dispatches {statuses()}, urgent {urgent_rows}, "
                                 f"{len(sink.messages)} mails received") from None
        order = [m["To"] for m in sink.messages]
        # Published last, behind 200 tasks of the backlog, it is taken among the first.
        assert order.index("urgent@example.org") < 100
    finally:
        sink.stop()


@pytest.mark.e2e
@pytest.mark.redis_broker
@pytest.mark.django_db(transaction=True)
def test_a_running_batch_gives_way_to_an_urgent_message_and_loses_nothing(workers):
    """One worker process busy with one batch of 600 mails (several seconds on a
    server taking a few ms each): an urgent message scheduled meanwhile does not
    wait for the batch to end. The batch stops between two sends and gives the
    rest back; every routine mail still arrives exactly once, one attempt each."""
    sink = SMTPServer(SlowSink())
    try:
        worker = workers("prio", smtp_port=sink.port, concurrency=1, DISPATCHER_LOG_LEVEL="INFO")
        routine = [f"low{i}@example.org" for i in range(600)]
        with override_settings(DISPATCHER_BATCH_SIZE=600, DISPATCHER_MIN_BATCH_SIZE=600):  # one task
            [(_, rows)] = schedule_messages("backlog", recipients("smtp", routine))
        wait_for(lambda: len(sink.messages) >= 50, 60, 0.02, "the batch to be under way")
        urgent = PlainTextMessage("urgent")
        urgent.priority = 9
        schedule_messages(urgent, recipients("smtp", "urgent@example.org"))
        wait_for(lambda: any(m["To"] == "urgent@example.org" for m in sink.messages), 60, 0.02,
                 "the urgent mail")
        order = [m["To"] for m in sink.messages]
        assert order.index("urgent@example.org") < 500, "it waited for the batch to end"
        wait_for(lambda: Dispatch.objects.filter(pk__in=[d.pk for d in rows], status="sent").count() == 600,
                 120, 0.1, "every routine mail to be sent")
        assert Counter(m["To"] for m in sink.messages) == Counter([*routine, "urgent@example.org"])
        attempts = Dispatch.objects.filter(pk__in=[d.pk for d in rows]).values_list("attempts", flat=True)
        assert set(attempts) == {1}
        assert "gave way to more urgent dispatches" in worker.output()
    finally:
        sink.stop()


RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

SCHEDULE_BACKLOG_THEN_URGENT = """
import config.celery, django
django.setup()
from django.test import override_settings
from dispatcher.api import recipients, schedule_messages
from dispatcher.messages import PlainTextMessage
with override_settings(DISPATCHER_FANOUT_TASKS=200, DISPATCHER_MIN_BATCH_SIZE=10):
    schedule_messages("backlog", recipients("smtp", [f"low{i}@example.org" for i in range(2000)]))
    urgent = PlainTextMessage("urgent")
    urgent.priority = 9
    schedule_messages(urgent, recipients("smtp", "urgent@example.org"))
"""


def _drop_rabbitmq_queue(name: str) -> None:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(name)
    except Exception as exc:  # the queue is not there: nothing to drop
        if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
            raise


@pytest.mark.e2e
@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_on_rabbitmq_a_high_priority_message_overtakes_a_backlog(workers):
    """The same promise on RabbitMQ: queues declared with x-max-priority, the
    urgent task published last is served among the first. A process of its own
    publishes (its settings declare the queues as a RabbitMQ site's do)."""
    queue = "dispatch.smtp"
    _drop_rabbitmq_queue(queue)  # declared before with other arguments, it would refuse ours
    sink = SMTPServer(SlowSink())
    try:
        env = worker_env(sink.port, CELERY_BROKER_URL=RABBITMQ_URL)
        subprocess.run([sys.executable, "-c", SCHEDULE_BACKLOG_THEN_URGENT], cwd=BASE, env=env, check=True,
                       timeout=120)
        assert Dispatch.objects.count() == 2001
        workers("prio-amqp", smtp_port=sink.port, concurrency=1, CELERY_BROKER_URL=RABBITMQ_URL)
        wait_for(lambda: any(m["To"] == "urgent@example.org" for m in sink.messages), 120, 0.05,
                 "the urgent mail")
        order = [m["To"] for m in sink.messages]
        # Published last, behind 200 tasks of the backlog, it is taken among the first.
        assert order.index("urgent@example.org") < 100
    finally:
        sink.stop()
        _drop_rabbitmq_queue(queue)
