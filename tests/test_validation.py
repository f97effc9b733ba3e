"""schedule_messages refuses what cannot be stored as given, before its
transaction, with the project's own exceptions, on SQLite as on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from dispatcher.api import Recipient, recipients, schedule_messages
from dispatcher.exceptions import (
    DispatcherError,
    InvalidAddress,
    InvalidContext,
    InvalidIdempotencyKey,
    InvalidPriority,
    InvalidRecipient,
    InvalidSendAt,
    InvalidSender,
    UnknownMessenger,
)
from dispatcher.messages import MessageBase, PlainTextMessage
from dispatcher.models import Dispatch, Message
from dispatcher.registry import register_message_types

pytestmark = pytest.mark.django_db


def nothing_written() -> bool:
    return Message.objects.count() == 0 and Dispatch.objects.count() == 0


def refused(exc_type: type[Exception], *args, match: str | None = None, **kwargs) -> None:
    with pytest.raises(exc_type, match=match) as info:
        schedule_messages(*args, **kwargs)
    assert isinstance(info.value, DispatcherError | InvalidAddress)
    assert nothing_written()


@pytest.mark.parametrize("address", [
    "bad@example.org\r\nBcc: victim@example.org",
    "bad@example.org\nBcc: victim@example.org",
    "tab\t@example.org",
])
def test_a_hand_built_smtp_recipient_is_validated(address):
    refused(InvalidAddress, "hi", [Recipient("smtp", address)])


@pytest.mark.parametrize("address", ["line\nbreak", "nul\x00byte", "sep\u2028arator", "lone\ud800"])
def test_control_characters_are_refused_for_every_messenger(address):
    # mymessenger (the seed's) takes any string as its address.
    refused(InvalidAddress, "hi", [Recipient("mymessenger", address)])
    with pytest.raises(InvalidAddress):
        recipients("mymessenger", address)


def test_an_address_longer_than_its_column_is_refused():
    refused(InvalidAddress, "hi", [Recipient("mymessenger", "a" * 501)], match="at most 500")
    with pytest.raises(InvalidAddress, match="at most 500"):
        recipients("mymessenger", "a" * 501)
    schedule_messages("hi", [Recipient("mymessenger", "a" * 500)])
    assert Dispatch.objects.get().address == "a" * 500


def test_a_hand_built_recipient_with_an_unknown_messenger_or_a_non_user():
    refused(UnknownMessenger, "hi", [Recipient("nope", "x@example.org")])
    refused(InvalidRecipient, "hi", [Recipient("smtp", "x@example.org", user="not a user")])
    refused(InvalidRecipient, "hi", "x@example.org")


def test_a_hand_built_valid_recipient_is_stored_as_the_builder_would():
    schedule_messages("hi", [Recipient("smtp", "  someone@example.org ")])
    assert Dispatch.objects.get().address == "someone@example.org"


def test_idempotency_key_fits_its_column_with_its_suffixes():
    to = recipients("smtp", "a@example.org")
    refused(InvalidIdempotencyKey, "hi", to, idempotency_key="k" * 201, match="too long")
    # Two messages: the second is stored as "<key>#1".
    refused(InvalidIdempotencyKey, ["one", "two"], to, idempotency_key="k" * 199)
    refused(InvalidIdempotencyKey, "hi", to, idempotency_key=12345)
    refused(InvalidIdempotencyKey, "hi", to, idempotency_key="nul\x00")
    schedule_messages(["one", "two"], to, idempotency_key="k" * 198)
    assert sorted(len(k) for k in Message.objects.values_list("idempotency_key", flat=True)) == [198, 200]


@pytest.mark.parametrize("priority", [1.5, "5", True, 32768, -32769, 10**9])
def test_priority_is_a_whole_number_in_range(priority):
    refused(InvalidPriority, "hi", recipients("smtp", "a@example.org"), priority=priority)


def test_priority_limits_are_accepted():
    to = recipients("smtp", "a@example.org")
    schedule_messages("hi", to, priority=32767)
    schedule_messages("hi", to, priority=-32768)
    assert sorted(Message.objects.values_list("priority", flat=True)) == [-32768, 32767]


def test_a_message_type_with_a_priority_out_of_range():
    class Loud(MessageBase):
        alias = "loud_test_type"
        priority = 100_000

    register_message_types(Loud)
    refused(InvalidPriority, Loud("x"), recipients("smtp", "a@example.org"), match="loud_test_type")


@pytest.mark.parametrize("send_at", [
    dt.datetime(2030, 1, 1, 12, 0),  # naive
    dt.date(2030, 1, 1),
    "2030-01-01T12:00:00Z",
    1893456000,
])
def test_send_at_is_an_aware_datetime(send_at):
    refused(InvalidSendAt, "hi", recipients("smtp", "a@example.org"), send_at=send_at)


def test_an_aware_send_at_is_accepted():
    later = timezone.now() + dt.timedelta(hours=1)
    [(_, [dispatch])] = schedule_messages("hi", recipients("smtp", "a@example.org"), send_at=later)
    assert dispatch.next_attempt_at == later


@pytest.mark.parametrize("context", [
    {"text": "x", "when": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},  # not JSON
    {"text": "nul \x00 in text"},  # PostgreSQL's jsonb refuses \u0000
    {"text": "fine", "nested": [{"deep": "lone \udc80"}]},
    {"text": "fine", "key \x00": 1},
])
def test_context_must_be_storable_as_json(context):
    refused(InvalidContext, PlainTextMessage(context), recipients("smtp", "a@example.org"))


def test_sender_must_be_a_saved_user(django_user_model):
    to = recipients("smtp", "a@example.org")
    refused(InvalidSender, "hi", to, sender="ann")
    refused(InvalidSender, "hi", to, sender=django_user_model(username="unsaved"))
    with pytest.raises(TypeError):  # as before, for callers that caught TypeError
        schedule_messages("hi", to, sender=42)
