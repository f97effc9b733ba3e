"""The public API: scheduling, recipients, registries, and bad input."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from dispatcher.api import (
    get_registered_messenger_object,
    recipients,
    register_messenger_objects,
    schedule_messages,
    send_test_message,
)
from dispatcher.exceptions import (
    InvalidAddress,
    InvalidRecipient,
    NoRecipients,
    UnknownMessageType,
    UnknownMessenger,
)
from dispatcher.messages import EmailHtmlMessage, EmailTextMessage, MessageBase, PlainTextMessage
from dispatcher.models import Dispatch, Message
from messengers.exceptions import TemporaryError
from messengers.smtp import SMTPMessenger
from tests.services import free_port

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int]:
    return Message.objects.count(), Dispatch.objects.count()


def test_plain_string_becomes_plain_text_message():
    [(message, dispatches)] = schedule_messages("Hello there!", recipients("smtp", "a@example.org"))
    assert message.message_type == "plain"
    assert message.context == {"text": "Hello there!"}
    assert [(d.messenger, d.address, d.status) for d in dispatches] == [
        ("smtp", "a@example.org", "pending")
    ]
    assert dispatches[0].pk is not None


def test_several_messages_and_messengers(notifications):
    result = schedule_messages(
        [PlainTextMessage("one"), "two"],
        recipients("smtp", ["a@example.org", "b@example.org"]) + recipients("mymessenger", "x"),
    )
    assert [m.context["text"] for m, _ in result] == ["one", "two"]
    assert all(len(ds) == 3 for _, ds in result)
    assert Dispatch.objects.count() == 6
    # Each address got each message, through its own messenger.
    assert sorted((n.messenger, n.address, n.text) for n in notifications) == [
        ("mymessenger", "x", "one"), ("mymessenger", "x", "two"),
        ("smtp", "a@example.org", "one"), ("smtp", "a@example.org", "two"),
        ("smtp", "b@example.org", "one"), ("smtp", "b@example.org", "two"),
    ]


def test_users_are_resolved_through_get_address(django_user_model):
    user = django_user_model.objects.create(username="user2", email="u2@example.org")
    assert recipients("mymessenger", ["user1--address", user]) == [
        ("mymessenger", "user1--address", None),
        ("mymessenger", "user2--address", user),
    ]
    [(_, [dispatch])] = schedule_messages("hi", recipients("smtp", user))
    assert dispatch.address == "u2@example.org" and dispatch.recipient == user


def test_recipients_accepts_a_messenger_object():
    messenger = get_registered_messenger_object("mymessenger")
    assert recipients(messenger, "abc") == [("mymessenger", "abc", None)]


def test_future_send_at_is_not_published_until_due():
    later = timezone.now() + dt.timedelta(hours=1)
    [(_, [dispatch])] = schedule_messages("later", recipients("smtp", "a@example.org"), send_at=later)
    dispatch.refresh_from_db()
    assert dispatch.next_attempt_at == later
    assert dispatch.queued_at is None


def test_priority_and_sender(django_user_model):
    sender = django_user_model.objects.create(username="boss")
    [(message, _)] = schedule_messages("x", recipients("smtp", "a@example.org"), sender=sender, priority=7)
    message.refresh_from_db()
    assert message.sender == sender and message.priority == 7


@pytest.mark.parametrize(
    "call, error, text",
    [
        (lambda: recipients("nosuch", "a"), UnknownMessenger, "unknown messenger 'nosuch'"),
        (lambda: schedule_messages("x", recipients("smtp", [])), NoRecipients, "empty"),
        (lambda: schedule_messages("x", []), NoRecipients, "empty"),
        (lambda: schedule_messages("x"), NoRecipients, "no recipients"),
        (lambda: schedule_messages("x", ["a@example.org"]), InvalidRecipient, "not a recipient"),
        (lambda: recipients("smtp", "not-an-email"), InvalidAddress, "not an e-mail address"),
        (lambda: recipients("mymessenger", 3.5), InvalidAddress, "not float"),
        (lambda: recipients("mymessenger", [{"a": 1}]), InvalidAddress, "not dict"),
    ],
)
def test_bad_input_raises_clear_error_and_writes_nothing(call, error, text):
    before = counts()
    with pytest.raises(error, match=text):
        call()
    assert counts() == before


def test_unknown_message_type_writes_nothing():
    class Unregistered(MessageBase):
        alias = "unregistered"

    before = counts()
    with pytest.raises(UnknownMessageType, match="unregistered"):
        schedule_messages(Unregistered("x"), recipients("smtp", "a@example.org"))
    assert counts() == before


def test_user_without_address_is_refused(django_user_model):
    user = django_user_model.objects.create(username="noemail", email="")
    before = counts()
    with pytest.raises(InvalidRecipient, match="has no address for messenger 'smtp'"):
        schedule_messages("x", recipients("smtp", user))
    assert counts() == before


def test_message_type_restricted_to_messengers():
    before = counts()
    with pytest.raises(InvalidRecipient, match="cannot be sent through 'mymessenger'"):
        schedule_messages(EmailTextMessage("s", "t"), recipients("mymessenger", "x"))
    assert counts() == before


def test_send_test_message_over_real_smtp(smtp_server):
    send_test_message("smtp", "someone@example.org", "This is a test message")
    [mail] = smtp_server.messages
    assert mail["To"] == "someone@example.org"
    assert mail.get_content().strip() == "This is a test message"
    assert Dispatch.objects.count() == 0


def test_send_test_message_reports_failure():
    register_messenger_objects(SMTPMessenger(host="127.0.0.1", port=free_port(), timeout=2))
    with pytest.raises(TemporaryError, match="SMTP ConnectionRefusedError"):
        send_test_message("smtp", "someone@example.org", "hi")


def test_html_email_renders_text_alternative():
    message = EmailHtmlMessage("Subj", "<p>Hello <b>you</b></p>")
    [(model, [dispatch])] = schedule_messages(message, recipients("smtp", "a@example.org"))
    rendered = EmailHtmlMessage.render(model, dispatch)
    assert rendered.subject == "Subj"
    assert rendered.html == "<p>Hello <b>you</b></p>"
    assert rendered.text == "Hello you"



def test_text_longer_than_a_messenger_takes_is_refused_before_writing():
    from dispatcher.exceptions import MessageTooLong
    from tests.testapp.messengers import ScriptedMessenger

    short = type("Short", (ScriptedMessenger,), {"alias": "short", "max_text_length": 10})()
    register_messenger_objects(short)
    before = counts()
    with pytest.raises(MessageTooLong, match="11 characters; messenger 'short' takes at most 10"):
        schedule_messages("x" * 11, recipients("short", "ok/1") + recipients("smtp", "a@example.org"))
    assert counts() == before
    schedule_messages("x" * 10, recipients("short", "ok/1"))
    assert counts() == (before[0] + 1, before[1] + 1)
