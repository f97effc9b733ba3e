"""Inbox: django-directmessages' API, with its security holes closed."""

from __future__ import annotations

import pytest
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatcher.inbox.api import (
    Inbox,
    InvalidMessage,
    MessageNotFound,
    MessagePermissionDenied,
    PrivateMessage,
    pm_write,
)
from dispatcher.models import Dispatch

pytestmark = pytest.mark.django_db


def test_send_message_and_read_it(users):
    message = Inbox.send_message(users.ann, users.bob, "Hi Bob")
    assert isinstance(message, PrivateMessage) and message.pk
    assert [m.body for m in Inbox.get_unread_messages(users.bob)] == ["Hi Bob"]
    assert list(Inbox.get_unread_messages(users.ann)) == []
    # The seed's one-argument call still works, with a message or its id.
    assert Inbox.read_message(message.pk) == "Hi Bob"
    assert list(Inbox.get_unread_messages(users.bob)) == []
    assert PrivateMessage.objects.get(pk=message.pk).read_at is not None


def test_send_message_notifies_the_recipient(users):
    Inbox.send_message(users.ann, users.bob, "Hi Bob")
    assert list(Dispatch.objects.values_list("address", flat=True)) == ["bob@example.org"]
    Inbox.send_message(users.ann, users.bob, "Quiet", skip_notification=True)
    assert Dispatch.objects.count() == 1


def test_send_message_to_oneself_is_refused(users):
    with pytest.raises(InvalidMessage, match="yourself"):
        Inbox.send_message(users.ann, users.ann, "me")
    assert PrivateMessage.objects.count() == 0


def test_only_the_recipient_may_read_mark(users):
    message = Inbox.send_message(users.ann, users.bob, "secret")
    for intruder in (users.ann, users.cat):
        with pytest.raises(MessagePermissionDenied, match="only the recipient"):
            Inbox.read_message(message, intruder)
        with pytest.raises(PermissionDenied):  # Django's own: a view that lets it escape answers 403
            Inbox.read_message_formatted(message.pk, intruder)
    assert PrivateMessage.objects.get(pk=message.pk).read_at is None
    assert Inbox.read_message(message, users.bob) == "secret"
    assert PrivateMessage.objects.get(pk=message.pk).read_at is not None


def test_a_missing_message_raises_not_found_never_an_empty_string(users):
    message = Inbox.send_message(users.ann, users.bob, "x")
    missing = message.pk + 1000
    for call in (Inbox.read_message, Inbox.read_message_formatted, Inbox.mark_as_read):
        with pytest.raises(MessageNotFound, match=str(missing)):
            call(missing)
        with pytest.raises(ObjectDoesNotExist):
            call(missing, users.bob)
    with pytest.raises(MessageNotFound):
        Inbox.read_message("not-a-number")


def test_a_pending_message_cannot_be_read_by_its_recipient(users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    pending = pm_write(users.ann, users.bob, "wait", "body", auto_moderators=lambda m: None)
    with pytest.raises(MessageNotFound):
        Inbox.read_message(pending, users.bob)
    with pytest.raises(MessageNotFound):
        Inbox.read_message(pending.pk)


def test_read_message_formatted(users):
    message = Inbox.send_message(users.ann, users.bob, "Hello there")
    assert Inbox.read_message_formatted(message, users.bob) == "ann: Hello there"
    visitor = pm_write("guest@example.org", users.bob, "Q", "From outside")
    assert Inbox.read_message_formatted(visitor.pk) == "guest@example.org: From outside"


def test_read_message_formatted_uses_the_username_field_of_custom_user_models(users, monkeypatch):
    # A user model whose USERNAME_FIELD is not "username": get_username() follows it.
    user_model = type(users.ann)
    monkeypatch.setattr(user_model, "USERNAME_FIELD", "email")
    message = Inbox.send_message(users.ann, users.bob, "hi")
    assert Inbox.read_message_formatted(message, users.bob) == "ann@example.org: hi"


def test_get_conversations_most_recent_partner_first(users, django_user_model):
    dan = django_user_model.objects.create_user("dan", "dan@example.org")
    Inbox.send_message(users.ann, users.bob, "1")
    Inbox.send_message(users.cat, users.ann, "2")
    Inbox.send_message(dan, users.bob, "not ann's")
    Inbox.send_message(users.ann, dan, "3")
    Inbox.send_message(users.bob, users.ann, "4")  # bob is the latest again
    with CaptureQueriesContext(connection) as ctx:
        partners = Inbox.get_conversations(users.ann)
    assert [u.username for u in partners] == ["bob", "dan", "cat"]
    assert len(ctx.captured_queries) == 2  # grouped in SQL, then the users
    assert partners[0].last_message_at >= partners[1].last_message_at
    assert [u.username for u in Inbox.get_conversations(dan)] == ["ann", "bob"]


def test_get_conversations_leaves_out_what_the_user_cannot_see(users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    pm_write(users.cat, users.ann, "pending", auto_moderators=[lambda m: None])
    deleted = Inbox.send_message(users.bob, users.ann, "deleted")
    PrivateMessage.objects.delete_for(users.ann, deleted)
    assert Inbox.get_conversations(users.ann) == []
    assert [u.username for u in Inbox.get_conversations(users.cat)] == ["ann"]


def test_get_conversation_order_limit_reversed(users):
    texts = []
    for i in range(5):
        a, b = (users.ann, users.bob) if i % 2 == 0 else (users.bob, users.ann)
        Inbox.send_message(a, b, f"m{i}")
        texts.append(f"m{i}")
    Inbox.send_message(users.cat, users.ann, "other conversation")
    assert [m.body for m in Inbox.get_conversation(users.ann, users.bob)] == texts
    assert [m.body for m in Inbox.get_conversation(users.ann, users.bob, limit=2)] == ["m0", "m1"]
    assert [m.body for m in Inbox.get_conversation(users.ann, users.bob, limit=2, reversed=True)] == [
        "m4", "m3"
    ]
    assert [m.body for m in Inbox.get_conversation(users.bob, users.ann, reversed=True)] == texts[::-1]
    # Our name for it, and the seed's positional form, give the same.
    assert [m.body for m in Inbox.get_conversation(users.bob, users.ann, newest_first=True)] == texts[::-1]
    assert [m.body for m in Inbox.get_conversation(users.bob, users.ann, 2, True)] == ["m4", "m3"]
    with pytest.raises(TypeError, match="reverse"):
        Inbox.get_conversation(users.bob, users.ann, reverse=True)


def test_get_conversation_mark_read_marks_only_messages_to_user1(users):
    to_ann = Inbox.send_message(users.bob, users.ann, "to ann")
    to_bob = Inbox.send_message(users.ann, users.bob, "to bob")
    messages = Inbox.get_conversation(users.ann, users.bob, mark_read=True)
    assert [m.read_at is not None for m in messages] == [True, False]
    assert PrivateMessage.objects.get(pk=to_ann.pk).read_at is not None
    # directmessages cleared Bob's unread state here too; Bob has not read it.
    assert PrivateMessage.objects.get(pk=to_bob.pk).read_at is None
    assert Inbox.get_unread_messages(users.bob).get().pk == to_bob.pk


def test_get_conversation_mark_read_respects_the_limit(users):
    first = Inbox.send_message(users.bob, users.ann, "1")
    second = Inbox.send_message(users.bob, users.ann, "2")
    Inbox.get_conversation(users.ann, users.bob, limit=1, reversed=True, mark_read=True)
    assert PrivateMessage.objects.get(pk=second.pk).read_at is not None
    assert PrivateMessage.objects.get(pk=first.pk).read_at is None


def test_get_conversation_query_count_does_not_grow(users):
    def queries(n: int) -> int:
        PrivateMessage.objects.all().delete()
        for i in range(n):
            Inbox.send_message(users.bob, users.ann, f"m{i}", skip_notification=True)
        with CaptureQueriesContext(connection) as ctx:
            messages = Inbox.get_conversation(users.ann, users.bob, mark_read=True)
            [(m.sender_label, m.recipient_label) for m in messages]
        assert len(messages) == n and all(m.read_at for m in messages)
        return len(ctx.captured_queries)

    assert queries(3) == queries(30)


def test_message_sent_fires_after_commit_with_message_sender_and_recipient(
    users, signals, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message = Inbox.send_message(users.ann, users.bob, "hi", skip_notification=True)
        assert signals["sent"] == []  # not before the commit
    for callback in callbacks:
        callback()
    [event] = signals["sent"]
    assert event["sender"] == message and event["message"] == message
    assert (event["from_user"], event["to"]) == (users.ann, users.bob)
    # The receiver sees the saved row.
    assert PrivateMessage.objects.filter(pk=event["message"].pk).exists()


def test_message_read_fires_once_after_the_save(users, signals, django_capture_on_commit_callbacks):
    message = Inbox.send_message(users.ann, users.bob, "hi", skip_notification=True)
    reads = []

    def on_read(sender, message, **kwargs):
        reads.append(PrivateMessage.objects.get(pk=message.pk).read_at)

    from dispatcher.inbox.signals import message_read

    message_read.connect(on_read, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            Inbox.read_message(message, users.bob)
        with django_capture_on_commit_callbacks(execute=True):
            Inbox.read_message(message, users.bob)  # already read: no second signal
            Inbox.get_conversation(users.bob, users.ann, mark_read=True)
    finally:
        message_read.disconnect(on_read)
    assert len(signals["read"]) == 1
    event = signals["read"][0]
    assert (event["message"].pk, event["from_user"], event["to"]) == (message.pk, users.ann, users.bob)
    assert reads and reads[0] is not None  # saved before the signal


def test_broadcast_fires_message_sent_per_copy_and_a_rolled_back_write_fires_nothing(
    users, signals, django_capture_on_commit_callbacks
):
    from django.db import transaction

    from dispatcher.inbox.api import pm_broadcast

    with django_capture_on_commit_callbacks(execute=True):
        pm_broadcast(users.ann, [users.bob, users.cat], "News", skip_notification=True)
    assert sorted(e["to"].username for e in signals["sent"]) == ["bob", "cat"]

    signals["sent"].clear()
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            pm_write(users.ann, users.bob, "never")
            raise RuntimeError("roll back")
    assert signals["sent"] == []
    assert not PrivateMessage.objects.filter(subject="never").exists()
