"""pm_write, pm_broadcast and the folders: the postman API."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatcher.inbox.api import (
    STATUS_ACCEPTED,
    Inbox,
    InvalidMessage,
    MessageNotFound,
    PrivateMessage,
    pm_broadcast,
    pm_write,
)
from dispatcher.models import Dispatch, Message

pytestmark = pytest.mark.django_db


def ids(qs) -> list[int]:
    return [m.pk for m in qs]


def test_pm_write_creates_an_accepted_message(users):
    message = pm_write(users.ann, users.bob, "Hello", "How are you?")
    message = PrivateMessage.objects.get(pk=message.pk)
    assert (message.sender, message.recipient, message.subject, message.body) == (
        users.ann, users.bob, "Hello", "How are you?"
    )
    assert message.moderation_status == STATUS_ACCEPTED and message.moderation_date is not None
    assert message.read_at is None and message.replied_at is None
    assert not message.sender_archived and message.sender_deleted_at is None
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [message.pk]
    assert ids(PrivateMessage.objects.sent(users.ann)) == [message.pk]
    assert ids(PrivateMessage.objects.inbox(users.ann)) == []


def test_pm_write_auto_archive_and_auto_delete_touch_only_the_sender_side(users):
    archived = pm_write(users.ann, users.bob, "a", auto_archive=True)
    deleted = pm_write(users.ann, users.bob, "d", auto_delete=True)
    assert ids(PrivateMessage.objects.sent(users.ann)) == []
    assert ids(PrivateMessage.objects.archives(users.ann)) == [archived.pk]
    assert ids(PrivateMessage.objects.trash(users.ann)) == [deleted.pk]
    # The recipient's side is untouched.
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [deleted.pk, archived.pk]


def test_pm_write_schedules_a_notification_unless_skipped(users):
    pm_write(users.ann, users.bob, "Hello")
    [dispatch] = Dispatch.objects.select_related("message")
    assert (dispatch.messenger, dispatch.address, dispatch.recipient) == (
        "smtp", "bob@example.org", users.bob
    )
    assert dispatch.message.message_type == "inbox_new_message"
    pm_write(users.ann, users.bob, "Quiet", skip_notification=True)
    assert Dispatch.objects.count() == 1


def test_pm_write_rejects_bad_input_and_writes_nothing(users):
    with pytest.raises(InvalidMessage, match="longer than 120"):
        pm_write(users.ann, users.bob, "x" * 121)
    with pytest.raises(InvalidMessage, match="not an e-mail address"):
        pm_write(users.ann, "not an address", "hi")
    with pytest.raises(InvalidMessage, match="visitor cannot write to another visitor"):
        pm_write("a@example.org", "b@example.org", "hi")
    assert PrivateMessage.objects.count() == 0 and Message.objects.count() == 0


def test_a_visitor_recipient_is_an_email_address(users):
    message = pm_write(users.ann, "visitor@example.org", "Re: your question", "Here you go")
    assert message.recipient is None and message.email == "visitor@example.org"
    assert message.recipient_label == "visitor@example.org"
    [dispatch] = Dispatch.objects.all()
    assert (dispatch.messenger, dispatch.address, dispatch.recipient) == ("smtp", "visitor@example.org", None)


def test_replies_share_the_thread_and_set_replied_at(users):
    first = pm_write(users.ann, users.bob, "Question")
    reply = pm_write(users.bob, users.ann, "Re: Question", "Answer", parent=first)
    again = pm_write(users.ann, users.bob, "Re: Re: Question", parent=reply.pk)
    first.refresh_from_db()
    assert first.thread_id == first.pk and reply.thread_id == first.pk and again.thread_id == first.pk
    assert first.replied_at == reply.sent_at
    reply.refresh_from_db()
    assert reply.replied_at == again.sent_at
    thread = [first.pk, reply.pk, again.pk]
    for user in (users.ann, users.bob):
        assert ids(PrivateMessage.objects.thread(user, again)) == thread
        assert ids(Inbox.thread(user, first.pk)) == thread
    with pytest.raises(MessageNotFound):
        Inbox.thread(users.cat, first.pk)
    with pytest.raises(InvalidMessage, match="two parties"):
        pm_write(users.cat, users.ann, "Butting in", parent=first)


def test_pm_broadcast_sends_one_copy_per_user_archived_and_deleted_for_the_sender(users):
    messages = pm_broadcast(users.ann, [users.bob, users.cat, users.bob], "Announcement", "Body")
    assert [m.recipient for m in messages] == [users.bob, users.cat]  # bob only once
    rows = PrivateMessage.objects.order_by("pk")
    assert [m.pk for m in messages] == ids(rows)
    for row in rows:
        assert row.moderation_status == STATUS_ACCEPTED and row.moderation_date is not None
        assert row.sender_archived and row.sender_deleted_at is not None
        assert row.recipient_deleted_at is None and not row.recipient_archived
    assert PrivateMessage.objects.sent(users.ann).count() == 0
    assert PrivateMessage.objects.archives(users.ann).count() == 0
    assert PrivateMessage.objects.trash(users.ann).count() == 2
    assert PrivateMessage.objects.inbox(users.bob).get().subject == "Announcement"
    assert sorted(Dispatch.objects.values_list("address", flat=True)) == [
        "bob@example.org", "cat@example.org"
    ]
    assert Message.objects.count() == 1  # one notification, one dispatch per recipient


@pytest.mark.parametrize("shape", ["single", "tuple", "queryset"])
def test_pm_broadcast_recipients_shapes(users, django_user_model, shape):
    value = {
        "single": users.bob,
        "tuple": (users.bob, users.cat),
        "queryset": django_user_model.objects.filter(username__in=["bob", "cat"]),
    }[shape]
    messages = pm_broadcast(users.ann, value, "Hi", skip_notification=True)
    expected = ["bob"] if shape == "single" else ["bob", "cat"]
    assert sorted(m.recipient.username for m in messages) == expected
    assert Dispatch.objects.count() == 0


def test_pm_broadcast_to_nobody_writes_nothing(users):
    assert pm_broadcast(users.ann, [], "Hi") == []
    assert PrivateMessage.objects.count() == 0 and Message.objects.count() == 0
    with pytest.raises(InvalidMessage, match="users only"):
        pm_broadcast(users.ann, ["someone@example.org"], "Hi")


def test_pm_broadcast_query_count_does_not_grow_with_recipients(django_user_model):
    sender = django_user_model.objects.create_user("sender", "sender@example.org")
    crowd = django_user_model.objects.bulk_create(
        [django_user_model(username=f"u{i}", email=f"u{i}@example.org") for i in range(60)]
    )

    def queries(n: int) -> int:
        with CaptureQueriesContext(connection) as ctx:
            pm_broadcast(sender, crowd[:n], "Hi", "Body")
        return len(ctx.captured_queries)

    assert queries(3) == queries(60)
    assert PrivateMessage.objects.count() == 63
    assert Dispatch.objects.count() == 63


def test_folders_and_unread_count(users):
    m1 = pm_write(users.ann, users.bob, "one", skip_notification=True)
    m2 = pm_write(users.cat, users.bob, "two", skip_notification=True)
    m3 = pm_write(users.ann, users.bob, "three", skip_notification=True)
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [m3.pk, m2.pk, m1.pk]
    assert PrivateMessage.objects.unread_count(users.bob) == 3
    Inbox.read_message(m2, users.bob)
    assert PrivateMessage.objects.unread_count(users.bob) == 2
    assert ids(PrivateMessage.objects.inbox(users.bob, unread=True)) == [m3.pk, m1.pk]

    assert PrivateMessage.objects.archive(users.bob, [m1]) == 1
    assert ids(PrivateMessage.objects.archives(users.bob)) == [m1.pk]
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [m3.pk, m2.pk]
    assert PrivateMessage.objects.unread_count(users.bob) == 1  # archived is out of the inbox
    # Ann's side did not move.
    assert ids(PrivateMessage.objects.sent(users.ann)) == [m3.pk, m1.pk]

    assert PrivateMessage.objects.delete_for(users.bob, [m3.pk]) == 1
    assert ids(PrivateMessage.objects.trash(users.bob)) == [m3.pk]
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [m2.pk]
    assert PrivateMessage.objects.undelete_for(users.bob, m3) == 1
    assert PrivateMessage.objects.unarchive(users.bob, m1) == 1
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [m3.pk, m2.pk, m1.pk]
    # A queryset works as well as a list: each user changes only their own side.
    assert PrivateMessage.objects.archive(users.cat, PrivateMessage.objects.all()) == 1  # m2
    assert PrivateMessage.objects.archive(users.ann, PrivateMessage.objects.all()) == 2  # m1, m3
    assert ids(PrivateMessage.objects.inbox(users.bob)) == [m3.pk, m2.pk, m1.pk]
    # Someone who is neither side changes nothing.
    assert PrivateMessage.objects.delete_for(users.cat, [m1, m3]) == 0


def test_pending_messages_stay_out_of_the_recipients_folders(users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    pending = pm_write(users.ann, users.bob, "Pending", auto_moderators=[lambda m: None])
    assert pending.moderation_status == "pending"
    assert PrivateMessage.objects.inbox(users.bob).count() == 0
    assert PrivateMessage.objects.unread_count(users.bob) == 0
    assert PrivateMessage.objects.archive(users.bob, pending) == 0
    assert ids(PrivateMessage.objects.sent(users.ann)) == [pending.pk]  # the sender sees it


@pytest.mark.parametrize("folder", ["inbox", "sent", "archives", "trash", "thread"])
def test_listing_a_folder_costs_the_same_queries_for_3_or_30_messages(users, folder):
    """Ann sees exactly n messages in the folder, from and to two other users."""

    def write(n: int) -> PrivateMessage:
        first = pm_write(users.bob, users.ann, "start", skip_notification=True)
        for i in range(n - 1):
            other = users.bob if i % 2 else users.cat
            if folder in ("sent", "trash"):
                sender, recipient = users.ann, other
            elif folder == "thread":
                sender, recipient = (users.ann, users.bob) if i % 2 else (users.bob, users.ann)
            else:
                sender, recipient = other, users.ann
            pm_write(sender, recipient, f"m{i}", skip_notification=True,
                     auto_delete=folder == "trash", parent=first if folder == "thread" else None)
        if folder == "archives":
            PrivateMessage.objects.archive(users.ann, list(PrivateMessage.objects.all()))
        if folder in ("sent", "trash"):
            PrivateMessage.objects.delete_for(users.ann, first)
        return first

    def queries(n: int) -> int:
        PrivateMessage.objects.all().delete()
        first = write(n)
        with CaptureQueriesContext(connection) as ctx:
            if folder == "thread":
                qs = PrivateMessage.objects.thread(users.ann, first)
            else:
                qs = getattr(PrivateMessage.objects, folder)(users.ann)
            labels = [(m.sender_label, m.recipient_label, m.subject) for m in qs]
        expected = n - 1 if folder == "sent" else n  # the first one is in the trash
        assert len(labels) == expected, labels
        return len(ctx.captured_queries)

    assert queries(3) == queries(30)
