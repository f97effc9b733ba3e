"""Notifications of private messages, delivered in process to a real SMTP server."""

from __future__ import annotations

import logging

import pytest

from dispatcher.delivery import deliver_batch
from dispatcher.inbox.api import Inbox, pm_broadcast, pm_write
from dispatcher.models import Dispatch

pytestmark = pytest.mark.django_db


def deliver(alias: str = "smtp") -> None:
    ids = list(Dispatch.objects.filter(messenger=alias).values_list("pk", flat=True))
    result = deliver_batch(alias, ids)
    assert result.sent == len(ids), Dispatch.objects.values_list("status", flat=True)


def test_new_message_mail_reaches_the_recipient(users, smtp_server):
    pm_write(users.ann, users.bob, "Lunch?", "Shall we meet at 12 & eat <pizza>?")
    deliver()
    [mail] = smtp_server.messages
    assert mail["To"] == "bob@example.org"
    assert mail["Subject"] == "New message from ann: Lunch?"
    text = mail.get_content()
    assert "Hello bob," in text
    assert "ann sent you a private message." in text
    assert "Subject: Lunch?" in text
    assert "Shall we meet at 12 & eat <pizza>?" in text  # a text mail: nothing HTML-escaped


def test_a_broadcast_mail_is_rendered_for_each_recipient(users, smtp_server):
    pm_broadcast(users.ann, [users.bob, users.cat], "Announcement", "Doors open at 9")
    deliver()
    mails = {m["To"]: m.get_content() for m in smtp_server.messages}
    assert sorted(mails) == ["bob@example.org", "cat@example.org"]
    assert "Hello bob," in mails["bob@example.org"] and "Hello cat," in mails["cat@example.org"]
    assert all("Doors open at 9" in text for text in mails.values())


def test_rejection_mail_reaches_the_sender_with_the_reason(users, smtp_server):
    pm_write(users.ann, users.bob, "Buy now", "cheap", auto_moderators=[lambda m: (0, "advertising")])
    deliver()
    [mail] = smtp_server.messages
    assert mail["To"] == "ann@example.org"
    assert mail["Subject"] == "Your message to bob was rejected"
    assert "Reason: advertising" in mail.get_content()


def test_a_visitor_is_notified_by_smtp_whatever_the_setting(users, settings, smtp_server):
    settings.DISPATCHER_INBOX_NOTIFY_MESSENGER = "mymessenger"
    pm_write(users.ann, "guest@example.org", "Your question", "The answer")
    pm_write(users.ann, users.bob, "To a user")
    assert sorted(Dispatch.objects.values_list("messenger", "address")) == [
        ("mymessenger", "bob--address"), ("smtp", "guest@example.org")
    ]
    deliver("smtp")
    [mail] = smtp_server.messages
    assert mail["To"] == "guest@example.org" and "The answer" in mail.get_content()
    assert "Hello," in mail.get_content()  # no user to greet by name


def test_the_messenger_setting_may_follow_each_users_preference(users, settings, notifications):
    settings.DISPATCHER_INBOX_NOTIFY_MESSENGER = (
        lambda user: "mymessenger" if user.username == "cat" else None
    )
    pm_broadcast(users.ann, [users.bob, users.cat], "Hi")
    assert sorted(Dispatch.objects.values_list("messenger", "address")) == [
        ("mymessenger", "cat--address"), ("smtp", "bob@example.org")
    ]
    [to_cat] = notifications.sent("mymessenger", to=users.cat)
    [to_bob] = notifications.sent("smtp", to=users.bob)
    assert "Hello cat," in to_cat.text and "Hello bob," in to_bob.text
    assert to_bob.subject == "New message from ann: Hi"


def test_users_who_cannot_be_notified_still_get_the_message(users, django_user_model, settings, caplog):
    no_email = django_user_model.objects.create_user("noemail")
    inactive = django_user_model.objects.create_user("gone", "gone@example.org", is_active=False)
    messages = pm_broadcast(users.ann, [no_email, inactive, users.bob], "Hi")
    assert len(messages) == 3
    assert list(Dispatch.objects.values_list("address", flat=True)) == ["bob@example.org"]

    settings.DISPATCHER_INBOX_NOTIFY_MESSENGER = "nosuchmessenger"
    with caplog.at_level(logging.ERROR, "dispatcher.inbox.notifications"):
        message = Inbox.send_message(users.ann, users.cat, "still delivered")
    assert message.pk and "nosuchmessenger" in caplog.text
    assert Dispatch.objects.count() == 1


def test_without_the_sites_framework_site_is_none(users, smtp_server):
    # django.contrib.sites is not installed here; tests/inbox/test_e2e.py has it installed.
    pm_write(users.ann, users.bob, "Without sites")
    deliver()
    text = smtp_server.messages[0].get_content()
    assert "ann sent you a private message." in text.splitlines()
    assert "http://127.0.0.1:8000" in text.splitlines()  # site_url stands in for the site


def test_notifications_commit_with_the_message(users, django_capture_on_commit_callbacks):
    """The notification rows are written in the message's transaction and
    published only once it commits."""
    from django.db import transaction

    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            pm_write(users.ann, users.bob, "rolled back")
            assert Dispatch.objects.count() == 1
            raise RuntimeError
    assert Dispatch.objects.count() == 0 and callbacks == []


def test_notifications_link_to_each_recipients_message_page(users, smtp_server, settings):
    settings.SITE_URL = "https://site.example/"
    single = pm_write(users.ann, users.bob, "Lunch?", "At noon?")
    copies = pm_broadcast(users.ann, [users.bob, users.cat], "Announcement", "Doors open at 9")
    rejected = pm_write(users.ann, users.cat, "Buy", "x", auto_moderators=[lambda m: (0, "ads")])
    deliver()
    mails = {(m["To"], m["Subject"]): m.get_content() for m in smtp_server.messages}
    link = "Read it and reply: https://site.example/messages/view/{}/"
    assert link.format(single.pk) in mails[("bob@example.org", "New message from ann: Lunch?")]
    by_recipient = {m.recipient.email: m.pk for m in copies}
    for address, pk in by_recipient.items():
        assert link.format(pk) in mails[(address, "New message from ann: Announcement")]
    assert (f"Your message: https://site.example/messages/view/{rejected.pk}/"
            in mails[("ann@example.org", "Your message to cat was rejected")])
