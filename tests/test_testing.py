"""dispatcher.testing: the in-memory outbox, inline delivery, the fixture and
the TestCase mixin, and the README's "Testing" example, run as written."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import TestCase, TransactionTestCase
from django.utils import timezone

from dispatcher import publish as publishing
from dispatcher import testing
from dispatcher.api import recipients, schedule_messages
from dispatcher.exceptions import InvalidAddress, InvalidRecipient, MessageTooLong
from dispatcher.messages import EmailHtmlMessage
from dispatcher.models import Dispatch, DispatchError
from dispatcher.registry import get_registered_messenger_object, register_messenger_objects
from dispatcher.testing import InMemoryMessenger, capture_notifications, deliver_inline
from messengers.base import MessengerBase
from messengers.smtp import SMTPMessenger
from tests import readme

# -- the README's example: its tests are this module's tests ----------------------------------
[(EXAMPLE_PATH, EXAMPLE)] = readme.file_blocks("Testing")
EXAMPLE_NAMESPACE: dict = {"__name__": __name__}
exec(compile(EXAMPLE, f"README.md, Testing ({EXAMPLE_PATH})", "exec"), EXAMPLE_NAMESPACE)
EXAMPLE_TESTS = {name: value for name, value in EXAMPLE_NAMESPACE.items()
                 if name.startswith("test_") and callable(value)}
EXAMPLE_CASES = {name: value for name, value in EXAMPLE_NAMESPACE.items()
                 if isinstance(value, type) and issubclass(value, TestCase) and value.__module__ == __name__}
globals().update(EXAMPLE_TESTS, **EXAMPLE_CASES)


def test_the_readme_example_shows_the_fixture_the_context_manager_and_the_mixin():
    assert any("notifications" in fn.__code__.co_varnames[:fn.__code__.co_argcount]
               for fn in EXAMPLE_TESTS.values()), "no test of the example uses the fixture"
    assert "capture_notifications" in EXAMPLE
    assert EXAMPLE_CASES
    assert all(issubclass(case, testing.NotificationsTestMixin) for case in EXAMPLE_CASES.values())
    collected = [name for name in globals() if name in EXAMPLE_TESTS or name in EXAMPLE_CASES]
    assert len(collected) >= 3, collected


# -- capturing ------------------------------------------------------------------------------
@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create(username="ann", email="ann@example.org")


def test_captured_notifications_are_kept_and_nothing_is_sent(smtp_server, notifications, ann):
    # smtp_server registers a real SMTP messenger first; the fixture replaces it.
    assert isinstance(get_registered_messenger_object("smtp"), InMemoryMessenger)
    schedule_messages(EmailHtmlMessage("News", "<p>Hello <b>you</b></p>"), recipients("smtp", ann))
    [mail] = notifications.outbox
    assert mail.messenger == "smtp" and mail.address == "ann@example.org"
    assert (mail.subject, mail.html, mail.text) == ("News", "<p>Hello <b>you</b></p>", "Hello you")
    assert mail.message_type == "email_html" and mail.attempt == 1
    dispatch = Dispatch.objects.get(pk=mail.dispatch_id)
    assert dispatch.status == Dispatch.Status.SENT and dispatch.message_id == mail.message_id
    assert smtp_server.messages == []
    assert testing.outbox == [mail]


def test_sent_finds_what_each_user_got_through_each_messenger(notifications, ann, django_user_model):
    bob = django_user_model.objects.create(username="bob", email="bob@example.org")
    schedule_messages("Doors open at 9", recipients("smtp", [ann, bob]) + recipients("mymessenger", ann))
    assert sorted((n.messenger, n.address) for n in notifications.sent(to=ann)) == [
        ("mymessenger", "ann--address"), ("smtp", "ann@example.org")
    ]
    assert [n.address for n in notifications.sent("smtp", to=bob)] == ["bob@example.org"]
    assert [n.text for n in notifications.sent("smtp", to="bob@example.org")] == ["Doors open at 9"]
    assert notifications.sent(message_type="email_html") == []
    assert len(notifications) == 3
    notifications.clear()
    assert list(notifications) == []


class Limited(MessengerBase):
    alias = "limited"
    max_text_length = 5
    capabilities = frozenset({"text", "sms"})

    @classmethod
    def get_address(cls, recipient):
        return getattr(recipient, "username", recipient)

    def send(self, message_cls, message_model, dispatch_models):
        raise AssertionError("a captured messenger never sends")


def test_scheduling_fails_in_a_capture_as_it_would_for_real(db, django_user_model):
    register_messenger_objects(Limited())
    nobody = django_user_model.objects.create(username="nobody", email="")
    with capture_notifications() as sent:
        limited = get_registered_messenger_object("limited")
        assert isinstance(limited, InMemoryMessenger)
        assert limited.capabilities == Limited.capabilities and limited.max_text_length == 5
        with pytest.raises(InvalidAddress):
            recipients("smtp", "not an address")
        with pytest.raises(InvalidRecipient):
            recipients("smtp", nobody)
        with pytest.raises(MessageTooLong):
            schedule_messages("too long", recipients("limited", "x"))
        schedule_messages("short", recipients("limited", nobody))
    assert [(n.address, n.text) for n in sent] == [("nobody", "short")]


def test_a_with_block_delivers_when_it_ends_and_puts_everything_back(db):
    configured = get_registered_messenger_object("smtp")
    with capture_notifications() as sent:
        schedule_messages("Hi", recipients("smtp", "a@example.org"))
        # The test's transaction has not committed: nothing is delivered yet.
        assert testing.outbox == []
        assert Dispatch.objects.get().status == Dispatch.Status.PENDING
    assert [n.address for n in sent] == ["a@example.org"]
    assert Dispatch.objects.get().status == Dispatch.Status.SENT
    assert get_registered_messenger_object("smtp") is configured
    assert publishing.local_delivery is None


def test_a_block_left_by_an_exception_delivers_nothing_and_puts_everything_back(db):
    configured = get_registered_messenger_object("smtp")
    with pytest.raises(ZeroDivisionError), capture_notifications():
        schedule_messages("Hi", recipients("smtp", "a@example.org"))
        1 / 0  # noqa: B018
    assert testing.outbox == []
    assert get_registered_messenger_object("smtp") is configured
    assert publishing.local_delivery is None


@pytest.mark.django_db(transaction=True)
def test_a_committed_transaction_delivers_at_once():
    with capture_notifications():
        schedule_messages("Hi", recipients("smtp", "a@example.org"))
        # Autocommit: the commit ran the delivery, before anything read the outbox.
        assert [n.address for n in testing.outbox] == ["a@example.org"]


def test_later_dispatches_wait_as_they_would_for_the_sweeps(notifications):
    later = timezone.now() + timedelta(hours=1)
    schedule_messages("Later", recipients("smtp", "a@example.org"), send_at=later)
    assert notifications.outbox == []
    assert Dispatch.objects.get().status == Dispatch.Status.PENDING


# -- inline delivery through real messengers ------------------------------------------------
def test_deliver_inline_sends_through_the_configured_messenger(smtp_server, db):
    with deliver_inline():
        schedule_messages("Hello over SMTP", recipients("smtp", "b@example.org"))
    [mail] = smtp_server.messages
    assert mail["To"] == "b@example.org" and "Hello over SMTP" in mail.get_content()
    assert Dispatch.objects.get().status == Dispatch.Status.SENT
    assert isinstance(get_registered_messenger_object("smtp"), SMTPMessenger)


def test_inline_errors_are_recorded_as_a_worker_records_them(db):
    with deliver_inline():
        schedule_messages("x", recipients("broken_before", "ok/1"))
    dispatch = Dispatch.objects.get()
    assert dispatch.status == Dispatch.Status.ERROR and dispatch.attempts == 1
    [error] = DispatchError.objects.all()
    assert error.error_class == "TemporaryError" and "before_send" in error.text


# -- the mixin ------------------------------------------------------------------------------
class MixinTests(testing.NotificationsTestMixin, TransactionTestCase):
    def test_self_notifications_captures_and_cleans_up(self):
        schedule_messages("Hi", recipients("smtp", "c@example.org"))
        self.assertEqual([n.address for n in self.notifications.sent("smtp")], ["c@example.org"])
        self.assertIsInstance(get_registered_messenger_object("smtp"), InMemoryMessenger)
        self.doCleanups()
        self.assertIsInstance(get_registered_messenger_object("smtp"), SMTPMessenger)
