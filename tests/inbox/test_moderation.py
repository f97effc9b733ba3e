"""Auto-moderators (django-postman's rating rules) and moderation by a person."""

from __future__ import annotations

import pytest

from dispatcher.inbox.api import PrivateMessage, pm_write
from dispatcher.inbox.moderation import moderate, rate
from dispatcher.models import Dispatch

pytestmark = pytest.mark.django_db


def const(value, reason=None):
    def moderator(message):
        return value if reason is None else (value, reason)

    return moderator


def written(users, moderators, **kw):
    return pm_write(users.ann, users.bob, "Subject", "Body", auto_moderators=moderators, **kw)


@pytest.mark.parametrize(
    ("ratings", "expected"),
    [
        ([0], False),
        ([False], False),
        ([100], True),
        ([True], True),
        ([None], None),
        ([None, None], None),
        ([50], True),
        ([49], False),
        ([40, 60], True),  # average 50 accepts
        ([30, 60], False),  # average 45 rejects
        ([None, 70], True),  # None is neutral
        ([0, 100], False),  # the first decisive rating stops the chain
        ([100, 0], True),
        ([60, 0], False),  # a 0 rejects even after favourable ratings
        ([10, True], True),
        ([150, -3, "high", 80], True),  # out of range or not a number: ignored
        ([150], None),
    ],
)
def test_rating_rules(users, ratings, expected):
    message = PrivateMessage(sender=users.ann, recipient=users.bob, subject="s")
    decision, _ = rate(message, [const(r) for r in ratings])
    assert decision is expected


def test_a_decisive_rating_stops_the_chain(users):
    called = []

    def spy(message):
        called.append(True)
        return 100

    rate(PrivateMessage(subject="s"), [const(0, "spam"), spy])
    assert called == []


def test_moderators_see_the_message(users):
    def no_links(message):
        return (0, "no links") if "http" in message.body else None

    clean = pm_write(users.ann, users.bob, "s", "plain words", auto_moderators=[no_links, const(100)])
    assert clean.moderation_status == "accepted"
    message = pm_write(users.ann, users.bob, "s", "see http://spam", auto_moderators=[no_links])
    assert (message.moderation_status, message.moderation_reason) == ("rejected", "no links")


def test_reasons_of_low_ratings_are_joined(users):
    message = written(
        users, [const(20, "too short"), const(30, "  "), const(70, "polite"), const(10, "shouty")]
    )
    # average 32.5 rejects; the reasons are those of the ratings under 50, blank ones left out
    assert message.moderation_status == "rejected"
    assert message.moderation_reason == "too short, shouty"


def test_default_reason_of_a_moderator(users):
    moderator = const(0)
    moderator.default_reason = "blocked sender"
    assert written(users, [moderator]).moderation_reason == "blocked sender"


def test_a_single_callable_is_accepted(users):
    assert written(users, const(100)).moderation_status == "accepted"


@pytest.mark.parametrize(
    ("setting", "status"), [(True, "accepted"), (False, "rejected"), (None, "pending")]
)
def test_with_no_opinion_the_setting_decides(users, settings, setting, status):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = setting
    assert written(users, [const(None)]).moderation_status == status


def test_the_default_with_no_opinion_is_pending(users, settings):
    del settings.DISPATCHER_INBOX_AUTO_MODERATE_AS  # not set at all
    assert written(users, [const(None)]).moderation_status == "pending"


def test_without_moderators_pm_write_accepts(users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = False
    assert pm_write(users.ann, users.bob, "trusted").moderation_status == "accepted"


def notified() -> list[tuple[str, str]]:
    return sorted(Dispatch.objects.values_list("message__message_type", "address"))


def test_acceptance_notifies_the_recipient_rejection_the_sender(users):
    accepted = written(users, [const(100)])
    assert notified() == [("inbox_new_message", "bob@example.org")]
    Dispatch.objects.all().delete()
    rejected = written(users, [const(0, "spam")])
    assert notified() == [("inbox_rejected_message", "ann@example.org")]
    assert rejected.moderation_date is not None and rejected.moderation_by is None
    assert rejected.recipient_deleted_at is not None  # never shows up on Bob's side
    assert [m.pk for m in PrivateMessage.objects.inbox(users.bob)] == [accepted.pk]
    # The sender still has it, with the reason.
    assert PrivateMessage.objects.sent(users.ann).get(pk=rejected.pk).moderation_reason == "spam"


def test_pending_notifies_nobody_until_a_moderator_decides(users, settings, django_user_model):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    staff = django_user_model.objects.create_user("mod", "mod@example.org", is_staff=True)
    message = written(users, [const(None)])
    assert notified() == []

    assert moderate(PrivateMessage.objects.filter(pk=message.pk), accept=True, moderator=staff) == 1
    message.refresh_from_db()
    assert (message.moderation_status, message.moderation_by) == ("accepted", staff)
    assert message.moderation_date is not None
    assert notified() == [("inbox_new_message", "bob@example.org")]
    assert [m.pk for m in PrivateMessage.objects.inbox(users.bob)] == [message.pk]
    # Already accepted: nothing changes, nobody is notified again.
    assert moderate([message], accept=True, moderator=staff) == 0
    assert len(notified()) == 1


def test_a_moderator_rejection_carries_the_reason_to_the_sender(users, settings, django_user_model):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    staff = django_user_model.objects.create_user("mod", is_staff=True)
    message = written(users, [const(None)])
    moderate([message], accept=False, moderator=staff, reason="off-topic")
    message.refresh_from_db()
    assert (message.moderation_status, message.moderation_reason, message.moderation_by) == (
        "rejected", "off-topic", staff
    )
    [dispatch] = Dispatch.objects.select_related("message")
    assert dispatch.address == "ann@example.org"
    assert dispatch.message.context["reason"] == "off-topic"


def test_accepting_a_pending_reply_sets_replied_at_on_the_parent(users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    first = pm_write(users.ann, users.bob, "Question")
    reply = pm_write(users.bob, users.ann, "Answer", parent=first, auto_moderators=[const(None)])
    first.refresh_from_db()
    assert first.replied_at is None  # a pending reply is not an answer yet
    moderate([reply], accept=True)
    first.refresh_from_db()
    assert first.replied_at == reply.sent_at
    moderate([reply], accept=False, reason="late")
    first.refresh_from_db()
    assert first.replied_at is None  # rolled back with the rejection


def test_message_sent_fires_when_a_moderator_accepts_never_on_rejection(
    users, settings, signals, django_capture_on_commit_callbacks
):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    with django_capture_on_commit_callbacks(execute=True):
        first = written(users, [const(None)], skip_notification=True)
        second = written(users, [const(None)], skip_notification=True)
    assert signals["sent"] == []  # pending: not sent yet
    with django_capture_on_commit_callbacks(execute=True):
        moderate([second], accept=False, reason="no", skip_notification=True)
        moderate([first], accept=True, skip_notification=True)
    assert [(e["message"].pk, e["from_user"], e["to"]) for e in signals["sent"]] == [
        (first.pk, users.ann, users.bob)
    ]
