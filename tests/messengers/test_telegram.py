"""Telegram against a fake Bot API on loopback, through the real delivery engine."""

from __future__ import annotations

import logging

import pytest

from dispatcher.api import recipients, register_messenger_objects
from dispatcher.delivery import deliver_batch
from dispatcher.limiter import get_backend
from dispatcher.models import Dispatch, DispatchError
from messengers.exceptions import InvalidAddress, PermanentError
from messengers.telegram import TelegramMessenger, chat_migrated, split_text
from tests.fakes.server import Reply
from tests.fakes.telegram import BAD_GATEWAY, FakeTelegram, flood

from .conftest import delay, deliver, errors

pytestmark = pytest.mark.django_db

TOKEN = "7012345678:AAH-telegram-secret-token-xyz"


@pytest.fixture
def fake(serve):
    app = FakeTelegram(TOKEN)
    app.server = serve(app)
    register_messenger_objects(TelegramMessenger(TOKEN, api_base=app.server.url))
    return app


def test_send_message_with_options(fake):
    register_messenger_objects(TelegramMessenger(
        TOKEN, api_base=fake.server.url, parse_mode="HTML", link_preview_options={"is_disabled": True},
        disable_notification=True, message_thread_id=7,
    ))
    [dispatch] = deliver("telegram", "Hi <b>there</b>!", "12345678")
    assert dispatch.status == "sent"
    [request] = fake.server.received
    assert (request.method, request.path) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert request.json == {
        "chat_id": 12345678, "text": "Hi <b>there</b>!", "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True}, "disable_notification": True,
        "message_thread_id": 7,
    }


def test_one_connection_per_batch(fake):
    deliver("telegram", "Hi", ["1", "2", "3"])
    deliver("telegram", "Hi", ["4"])
    ports = [r.client_port for r in fake.server.received]
    assert ports[0] == ports[1] == ports[2]  # the batch's session kept its connection
    assert ports[3] != ports[0]  # and closed it when the batch ended


def test_channel_name_and_negative_group_ids(fake):
    sent = deliver("telegram", "Hello", ["@news_channel", "-1001234567890"])
    assert [d.status for d in sent] == ["sent", "sent"]
    assert [p["chat_id"] for p in fake.sent] == ["@news_channel", -1001234567890]


def test_invalid_address_is_refused_before_anything_is_written():
    register_messenger_objects(TelegramMessenger(TOKEN))
    with pytest.raises(InvalidAddress):
        recipients("telegram", "not a chat")
    assert not Dispatch.objects.exists()


def test_long_text_goes_as_several_messages_split_at_lines(fake):
    lines = [f"line {i:04d} " + "x" * 40 for i in range(200)]  # ~10 200 characters
    text = "\n".join(lines)
    [dispatch] = deliver("telegram", text, "42")
    assert dispatch.status == "sent"
    parts = [p["text"] for p in fake.sent]
    assert len(parts) == 3
    assert all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text  # nothing lost, and every cut is at a line end
    assert all(p.splitlines()[-1] in lines for p in parts)


def test_split_counts_utf16_and_falls_back_to_words_then_characters():
    emoji = "😀" * 3000  # 6000 UTF-16 units, no spaces
    parts = split_text(emoji)
    assert "".join(parts) == emoji
    assert all(len(p.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    words = " ".join(["word"] * 2000)
    parts = split_text(words)
    assert " ".join(parts) == words and all(not p.startswith(" ") and len(p) <= 4096 for p in parts)


def test_a_failed_part_is_retried_without_resending_the_parts_delivered(fake):
    text = "\n".join(f"paragraph {i} " + "y" * 60 for i in range(150))  # ~11 000 characters: 3 parts
    fake.replies = [Reply(200, {"ok": True, "result": {"message_id": 1}}), flood(3)]
    [dispatch] = deliver("telegram", text, "42")
    assert dispatch.status == "error"
    assert "(after 1 of 3 parts)" in errors(dispatch)[0].text
    # The progress is kept on the dispatch, not parsed back out of the error text.
    assert dispatch.result == {"parts_total": 3, "message_ids": [1]}
    assert 2 <= delay(dispatch) <= 3.5
    DispatchError.objects.filter(dispatch=dispatch).update(text="rewritten by an operator")

    Dispatch.objects.filter(pk=dispatch.pk).update(next_attempt_at=dispatch.created)
    get_backend().reset("telegram")  # the flood wait is over (it paused telegram for every worker)
    deliver_batch("telegram", [dispatch.pk])
    dispatch.refresh_from_db()
    assert dispatch.status == "sent"
    expected = split_text(text)
    # The retry sent parts 2 and 3 only; part 1 was acknowledged by the scripted reply.
    assert [p["text"] for p in fake.sent] == expected[1:]
    assert dispatch.result["parts_total"] == 3 and len(dispatch.result["message_ids"]) == 3


def test_flood_wait_honours_retry_after_and_holds_back_the_rest_of_the_batch(fake):
    fake.replies = [flood(37)]
    sent = deliver("telegram", "Hi", ["1", "2", "3"])
    assert [d.status for d in sent] == ["error", "error", "error"]
    assert len(fake.server.received) == 1  # the others were not sent into the flood wait
    for dispatch in sent:
        assert 30 <= delay(dispatch) <= 37.5
    assert "retry after 37" in errors(sent[0])[0].text


@pytest.mark.parametrize(("setup", "reason"), [
    (lambda f: f.blocked.add(5), "403 Forbidden: bot was blocked by the user"),
    (lambda f: f.kicked.add(5), "403 Forbidden: bot was kicked from the group chat"),
    (lambda f: f.missing.add(5), "400 Bad Request: chat not found"),
])
def test_blocked_kicked_and_unknown_chats_fail_permanently(fake, setup, reason):
    setup(fake)
    [dispatch] = deliver("telegram", "Hi", "5")
    assert dispatch.status == "failed"
    [error] = errors(dispatch)
    assert error.permanent and reason in error.text and error.error_class == "PermanentError"


def test_bad_gateway_is_temporary(fake):
    fake.replies = [BAD_GATEWAY]
    [dispatch] = deliver("telegram", "Hi", "5")
    assert dispatch.status == "error"
    assert "HTTP 502" in errors(dispatch)[0].text


def test_wrong_token_fails_with_the_reason(fake):
    register_messenger_objects(TelegramMessenger("111:wrong-token-value", api_base=fake.server.url))
    [dispatch] = deliver("telegram", "Hi", "5")
    assert dispatch.status == "failed"
    assert "bot token was rejected" in errors(dispatch)[0].text
    assert "wrong-token-value" not in errors(dispatch)[0].text


def test_migrated_group_is_followed_and_recorded(fake, caplog):
    fake.migrated[-100] = -1009999
    seen = []

    def receiver(sender, old_chat_id, new_chat_id, dispatch, **kwargs):
        seen.append((old_chat_id, new_chat_id, dispatch.pk))

    chat_migrated.connect(receiver)
    try:
        with caplog.at_level(logging.WARNING, logger="messengers.telegram"):
            [dispatch] = deliver("telegram", "Hi group", "-100")
    finally:
        chat_migrated.disconnect(receiver)
    assert dispatch.status == "sent"
    assert [p["chat_id"] for p in fake.sent] == [-1009999]
    assert seen == [(-100, -1009999, dispatch.pk)]
    assert "chat -100 became supergroup -1009999" in caplog.text
    # The migration is kept on the dispatch, with the message id Telegram gave.
    assert dispatch.result == {"message_ids": [1], "chat_id": -1009999, "migrated_from": "-100"}
    # Later sends to the old id go straight to the new one.
    deliver("telegram", "Again", "-100")
    assert [r.json["chat_id"] for r in fake.server.received][-1] == -1009999
    assert len(fake.server.received) == 3


def test_get_chat_ids_lists_chats_that_sent_start(fake):
    fake.updates = [
        {"update_id": 1, "message": {"message_id": 1, "chat": {"id": 11}, "text": "/start"}},
        {"update_id": 2, "edited_message": {"chat": {"id": 12}, "text": "/start"}},
        {"update_id": 3, "my_chat_member": {"chat": {"id": 13}}},
        {"update_id": 4, "message": {"message_id": 2, "chat": {"id": 14}, "photo": []}},
        {"update_id": 5, "message": {"message_id": 3, "chat": {"id": -15}, "text": "/start@my_bot hi"}},
        {"update_id": 6, "message": {"message_id": 4, "chat": {"id": 16}, "text": "hello"}},
        {"update_id": 7, "message": {"message_id": 5, "chat": {"id": 11}, "text": "/start"}},
        {"update_id": 8, "callback_query": {"id": "x"}},
    ]
    messenger = TelegramMessenger(TOKEN, api_base=fake.server.url)
    assert messenger.get_chat_ids() == [11, -15]
    assert fake.server.received[-1].path == f"/bot{TOKEN}/getUpdates"


def test_send_test_message(fake):
    messenger = TelegramMessenger(TOKEN, api_base=fake.server.url)
    messenger.send_test_message("777", "This is a test")
    assert fake.sent == [{"chat_id": 777, "text": "This is a test"}]
    fake.blocked.add(778)
    with pytest.raises(PermanentError, match="blocked"):
        messenger.send_test_message("778", "This is a test")
