"""The messenger contract as users meet it: messengers written for
django-sitemessage, and message types that need a capability, not an alias."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.exceptions import InvalidRecipient
from dispatcher.messages import EmailHtmlMessage, EmailTextMessage
from dispatcher.models import Dispatch, DispatchError
from messengers.smtp import SMTPMessenger
from tests.seed_messenger import SitemessageStyleMessenger
from tests.services import wait_for

pytestmark = pytest.mark.django_db


def statuses() -> Counter:
    return Counter(Dispatch.objects.values_list("status", flat=True))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_sitemessage_style_three_argument_mark_error_through_a_worker(workers):
    workers("sitestyle")
    [(_, dispatches)] = schedule_messages("hello", recipients("sitestyle", ["ok-1", "refuse-2", "ok-3"]))
    # Each dispatch gets its own outcome at once: none is left PROCESSING for the lease sweep.
    wait_for(lambda: statuses() == {"sent": 2, "error": 1}, 60, 0.3, "two sent and one error")
    refused = Dispatch.objects.get(address="refuse-2")
    [error] = DispatchError.objects.filter(dispatch=refused)
    assert error.error_class == "RuntimeError" and "the remote end refused refuse-2" in error.text
    assert not error.permanent and refused.attempts == 1


def test_sitemessage_style_test_message_hook_is_what_send_test_message_calls():
    messenger = SitemessageStyleMessenger()
    register_messenger_objects(messenger)
    messenger.send_test_message("someone", "This is a test message")
    assert messenger.tested == [("someone", "This is a test message")]


def test_email_types_need_the_email_capability_not_an_alias(smtp_server):
    bulk = SMTPMessenger("news@example.org", host="127.0.0.1", port=smtp_server.port)
    bulk.alias = "smtp_bulk"
    register_messenger_objects(bulk)
    schedule_messages(EmailTextMessage("Hi", "Hello"), recipients("smtp_bulk", "a@example.org"))
    # A messenger without the capability refuses them, whatever its alias.
    with pytest.raises(InvalidRecipient, match="cannot be sent through 'sitestyle'"):
        register_messenger_objects(SitemessageStyleMessenger())
        schedule_messages(EmailTextMessage("Hi", "Hello"), recipients("sitestyle", "x"))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_email_message_through_a_second_smtp_alias_is_delivered_by_a_worker(workers, sink):
    bulk = SMTPMessenger("news@example.org", host="127.0.0.1", port=sink.port)
    bulk.alias = "smtp_bulk"
    register_messenger_objects(bulk)
    workers("bulk", TEST_EXTRA_MESSENGERS=json.dumps({"smtp_bulk": {
        "class": "messengers.smtp.SMTPMessenger",
        "options": {"from_email": "news@example.org", "host": "127.0.0.1", "port": sink.port},
    }}))
    message = EmailHtmlMessage("Issue 1", "<p>Hello <b>readers</b></p>")
    schedule_messages(message, recipients("smtp_bulk", ["r1@example.org", "r2@example.org"]))
    wait_for(lambda: statuses() == {"sent": 2}, 60, 0.3, "both bulk mails sent")
    wait_for(lambda: len(sink.messages) >= 2, 10)
    assert sorted(m["To"] for m in sink.messages) == ["r1@example.org", "r2@example.org"]
    assert {m["From"] for m in sink.messages} == {"news@example.org"}
    assert {m["Subject"] for m in sink.messages} == {"Issue 1"}
