"""Telegram end to end: a real Celery worker, a flood wait (429), then SENT after the delay."""

from __future__ import annotations

import json

import pytest

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.models import Dispatch
from dispatcher.sweeps import requeue_due
from messengers.telegram import TelegramMessenger
from tests.fakes.server import FakeServer
from tests.fakes.telegram import FakeTelegram, flood
from tests.services import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOKEN = "7012345678:AAH-e2e-telegram-token"
RETRY_AFTER = 2


def test_flood_wait_then_sent_through_a_worker(workers):
    fake = FakeTelegram(TOKEN)
    fake.replies = [flood(RETRY_AFTER)]
    server = FakeServer(fake)
    try:
        options = {"auth_token": TOKEN, "api_base": server.url}
        register_messenger_objects(TelegramMessenger(**options))
        workers("tg", TEST_EXTRA_MESSENGERS=json.dumps(
            {"telegram": {"class": "messengers.telegram.TelegramMessenger", "options": options}}))
        [(_, [dispatch])] = schedule_messages("Hi there!", recipients("telegram", "12345678"))

        def row() -> Dispatch:
            return Dispatch.objects.get(pk=dispatch.pk)

        wait_for(lambda: row().status == "error", 60, 0.2, "the flood wait to be recorded")
        first = row()
        [error] = first.errors.all()
        assert f"retry after {RETRY_AFTER}" in error.text and not error.permanent
        retry_in = (first.next_attempt_at - error.created).total_seconds()
        assert RETRY_AFTER - 0.5 <= retry_in <= RETRY_AFTER + 0.5

        def requeued_and_sent() -> bool:
            requeue_due()  # what beat runs every DISPATCHER_SWEEP_INTERVAL
            return row().status == "sent"

        wait_for(requeued_and_sent, 60, 0.3, "the retry to be sent")
    finally:
        server.stop()
    final = row()
    assert final.attempts == 2 and final.dispatched_at >= first.next_attempt_at
    assert fake.sent == [{"chat_id": 12345678, "text": "Hi there!"}]
    first_try, second_try = server.received
    assert second_try.at - first_try.at >= RETRY_AFTER - 0.1
