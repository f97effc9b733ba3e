"""Streamed fan-outs: audiences of any size, written in chunks, all or nothing."""

from __future__ import annotations

import pytest

from dispatcher.api import FanOut, recipient_stream, schedule_messages
from dispatcher.exceptions import InvalidAddress, InvalidRecipient, NoRecipients
from dispatcher.messages import EmailTextMessage
from dispatcher.models import Dispatch, Message

pytestmark = pytest.mark.django_db


def addresses(n: int, bad_at: int | None = None):
    for i in range(n):
        yield "not an address" if i == bad_at else f"s{i}@example.org"


def test_a_generator_of_addresses_is_written_in_chunks_and_summarised(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = schedule_messages("to many", recipient_stream("smtp", addresses(2500), chunk_size=1000))
    assert isinstance(result, FanOut) and (result.count, result.skipped) == (2500, 0)
    assert result.dispatches().count() == 2500 == Dispatch.objects.count()
    assert set(result.dispatches().values_list("address", flat=True)) == set(addresses(2500))
    assert len(callbacks) == 1  # the tasks are published after the commit


def test_a_queryset_of_users_streams_with_their_addresses(django_user_model):
    django_user_model.objects.bulk_create(
        [django_user_model(username=f"u{i}", email=f"u{i}@example.org") for i in range(120)]
    )
    users = django_user_model.objects.order_by("pk")
    result = schedule_messages(EmailTextMessage("Hello", "Body"),
                               recipient_stream("smtp", users, chunk_size=50))
    assert result.count == 120
    assert Dispatch.objects.filter(recipient__isnull=False).count() == 120


def test_one_bad_address_anywhere_writes_nothing():
    with pytest.raises(InvalidAddress):
        schedule_messages("x", recipient_stream("smtp", addresses(3000, bad_at=2900), chunk_size=1000))
    assert not Message.objects.exists() and not Dispatch.objects.exists()


def test_invalid_ones_can_be_skipped_and_counted(django_user_model):
    nobody = django_user_model.objects.create(username="noaddress", email="")
    audience = [*addresses(10, bad_at=3), nobody]
    result = schedule_messages("x", recipient_stream("smtp", audience, skip_invalid=True))
    assert (result.count, result.skipped) == (9, 2)


def test_an_idempotency_key_writes_once():
    first = schedule_messages("once", recipient_stream("smtp", addresses(30)), idempotency_key="stream-1")
    again = schedule_messages("once", recipient_stream("smtp", addresses(30)), idempotency_key="stream-1")
    assert (again.message.pk, again.count, again.existing) == (first.message.pk, 30, True)
    assert Dispatch.objects.count() == 30


def test_an_empty_stream_and_a_wrong_messenger_are_refused():
    with pytest.raises(NoRecipients):
        schedule_messages("x", recipient_stream("smtp", []))
    with pytest.raises(InvalidRecipient, match="cannot be sent through 'mymessenger'"):
        schedule_messages(EmailTextMessage("s", "t"), recipient_stream("mymessenger", ["a"]))
    assert not Message.objects.exists()


def test_checking_the_next_chunk_may_read_the_database_while_one_is_written(django_user_model):
    """Each chunk is written while the next is checked (bulk.StreamWriter); a
    check that needs the database (here every user's deferred e-mail, read
    one query each) waits for the write in progress and loses nothing."""
    django_user_model.objects.bulk_create(
        [django_user_model(username=f"d{i}", email=f"d{i}@example.org") for i in range(120)]
    )
    users = list(django_user_model.objects.only("pk", "username").order_by("pk"))
    result = schedule_messages(EmailTextMessage("Hello", "Body"),
                               recipient_stream("smtp", users, chunk_size=25))
    assert result.count == 120
    expected = sorted(f"d{i}@example.org" for i in range(120))
    assert sorted(Dispatch.objects.values_list("address", flat=True)) == expected
    assert Dispatch.objects.filter(recipient__isnull=False).count() == 120
