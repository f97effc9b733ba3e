"""Digests: notifications of a digest type to one recipient within a window
become one dispatch, rendered with all the items, sent when the window
closes. Exactly one digest per window with producers and closers running at
once in several processes; nothing lost when a worker dies while closing."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from datetime import time as daytime
from pathlib import Path
from typing import ClassVar

import pytest
from celery import current_app
from django.utils import timezone

from dispatcher.api import recipients, register_message_types, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.digests import close_due, closes_at
from dispatcher.exceptions import InvalidArgument
from dispatcher.messages import MessageBase
from dispatcher.models import DigestItem, DigestWindow, Dispatch, Message
from tests import producers
from tests.services import wait_for, worker_env
from tests.testapp.message_types import CommentDigestMessage, HeldDigestMessage

pytestmark = pytest.mark.django_db


def comment(author: str, text: str, **extra) -> CommentDigestMessage:
    return CommentDigestMessage({"author": author, "text": text, **extra})


def later(minutes: float = 31) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


def test_notifications_within_the_window_become_one_digest_with_every_item(smtp_server):
    windows = schedule_messages(comment("ann", "First!"), recipients("smtp", "bob@example.org"))
    schedule_messages(comment("cat", "Nice post"), recipients("smtp", "bob@example.org"))
    schedule_messages(comment("dan", "Agreed"), recipients("smtp", ["bob@example.org", "eve@example.org"]))
    assert not Dispatch.objects.exists() and not Message.objects.exists()  # nothing sent yet
    bob = DigestWindow.objects.get(address="bob@example.org")
    assert [w.pk for w in windows] == [bob.pk]
    assert (bob.status, bob.item_count) == ("open", 3)
    assert abs((bob.closes_at - bob.opened_at) - timedelta(minutes=30)) < timedelta(seconds=1)

    assert close_due() == 0  # the window is still open
    assert close_due(now=later()) == 2
    bob.refresh_from_db()
    assert bob.status == "closed" and bob.dispatch is not None
    digest = bob.message
    assert digest.message_type == "comment" and digest.context["count"] == 3
    assert [i["text"] for i in digest.context["items"]] == ["First!", "Nice post", "Agreed"]
    deliver_batch("smtp", list(Dispatch.objects.values_list("pk", flat=True)))
    assert list(Dispatch.objects.values_list("status", flat=True)) == ["sent", "sent"], [
        list(d.errors.values_list("text", flat=True)) for d in Dispatch.objects.all()]
    mails = {m["To"]: m for m in smtp_server.messages}
    assert mails["bob@example.org"].get_content().strip().splitlines() == [
        "3 new comments:", "- ann: First!", "- cat: Nice post", "- dan: Agreed"]
    assert mails["eve@example.org"].get_content().strip().splitlines() == ["1 new comment:", "- dan: Agreed"]
    assert mails["bob@example.org"]["Subject"] == "3 notifications: New comments"


def test_after_a_window_closed_the_next_notification_opens_another():
    schedule_messages(comment("ann", "one"), recipients("smtp", "bob@example.org"))
    close_due(now=later())
    schedule_messages(comment("ann", "two"), recipients("smtp", "bob@example.org"))
    windows = list(DigestWindow.objects.order_by("id").values_list("status", "item_count"))
    assert windows == [("closed", 1), ("open", 1)]
    assert close_due(now=later()) == 1
    assert [m.context["items"][0]["text"] for m in Message.objects.order_by("id")] == ["one", "two"]


def test_a_late_closing_takes_every_item_of_its_window():
    """The window is due but not closed yet (beat runs every 30 s): an item
    arriving then joins it, and the digest has it."""
    schedule_messages(comment("ann", "one"), recipients("smtp", "bob@example.org"))
    DigestWindow.objects.update(closes_at=timezone.now() - timedelta(seconds=5))
    schedule_messages(comment("ann", "two"), recipients("smtp", "bob@example.org"))
    assert close_due() == 1
    [digest] = Message.objects.all()
    assert [i["text"] for i in digest.context["items"]] == ["one", "two"]


class Daily(MessageBase):
    alias = "daily_report"
    title = "Daily report"
    digest_at = daytime(9, 0)
    zones: ClassVar[dict[str, str]] = {}

    @classmethod
    def digest_timezone(cls, user):
        return cls.zones.get(getattr(user, "username", ""), "UTC")


def test_daily_at_nine_in_the_users_time_zone(django_user_model):
    register_message_types(Daily)
    tokyo, york = (django_user_model.objects.create(username=n, email=f"{n}@example.org")
                   for n in ("tk", "ny"))
    Daily.zones.update(tk="Asia/Tokyo", ny="America/New_York")
    at = datetime(2025, 3, 7, 23, 30, tzinfo=UTC)  # 08:30 in Tokyo, 18:30 in New York
    assert closes_at(Daily, tokyo, at) == datetime(2025, 3, 8, 0, 0, tzinfo=UTC)  # 09:00 Tokyo, same day
    assert closes_at(Daily, york, at) == datetime(2025, 3, 8, 14, 0, tzinfo=UTC)  # 09:00 EST, next day
    # Across the change to summer time (9 March 2025 in New York): 09:00 EDT is 13:00 UTC.
    assert closes_at(Daily, york, datetime(2025, 3, 8, 15, 0, tzinfo=UTC)) == datetime(2025, 3, 9, 13, 0,
                                                                                        tzinfo=UTC)
    schedule_messages(Daily({"text": "build green"}), recipients("smtp", tokyo))
    window = DigestWindow.objects.get()
    local = window.closes_at.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (9, 0) and window.closes_at > window.opened_at


def test_a_digest_type_is_scheduled_alone():
    who = recipients("smtp", "bob@example.org")
    with pytest.raises(InvalidArgument):
        schedule_messages([comment("a", "b"), comment("c", "d")], who)
    with pytest.raises(InvalidArgument):
        schedule_messages(comment("a", "b"), who, send_at=later())
    with pytest.raises(InvalidArgument):
        schedule_messages(comment("a", "b"), who, throttle_key="k", throttle=timedelta(hours=1))
    assert not DigestWindow.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_parallel_producers_and_closers_make_exactly_one_digest_per_window(tmp_path):
    """Four processes append 40 comments each to the same 25 recipients while
    two others close every open window as fast as they can: windows open and
    close all the time, under the producers' feet. Every comment ends up in
    exactly one digest, each window in exactly one dispatch, never two open
    windows for one recipient."""
    addresses = [f"reader{i}@example.org" for i in range(25)]
    jobs = [("digest", {"rounds": 40, "addresses": addresses})] * 4
    jobs += [("close", {"stop_file": str(tmp_path / f"stop{i}")}) for i in range(2)]
    results = producers.run(jobs, worker_env(), tmp_path)
    assert sum(r["calls"] for r in results[:4]) == 160
    closed_by_closers = sum(r["closed"] for r in results[4:])
    closed_after = close_due(now=later())

    windows = list(DigestWindow.objects.all())
    assert all(w.status == "closed" for w in windows)
    assert closed_by_closers + closed_after == len(windows)
    assert len(windows) == Dispatch.objects.count() == Message.objects.count()
    assert closed_by_closers > 0, "the closers never closed a window while the producers ran"
    assert len({w.dispatch_id for w in windows}) == len(windows)  # one dispatch per window
    events = Counter()
    for message in Message.objects.all():
        assert message.context["count"] == len(message.context["items"])
        events.update(i["event"] for i in message.context["items"])
    assert len(events) == 4 * 40 and set(events.values()) == {25}  # each comment once per recipient
    assert DigestItem.objects.count() == 4 * 40 * 25


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_workers_close_due_windows_and_send_one_mail_per_recipient(workers, sink):
    workers("digests", smtp_port=sink.port)
    for i in range(5):
        schedule_messages(comment(f"user{i}", f"comment {i}"),
                          recipients("smtp", ["a@example.org", "b@example.org"]))
    DigestWindow.objects.update(closes_at=timezone.now())  # half an hour later
    current_app.send_task("dispatcher.close_digests", queue="dispatcher")  # what beat runs
    wait_for(lambda: Counter(Dispatch.objects.values_list("status", flat=True)) == {"sent": 2}, 60, 0.2,
             "two digests sent")
    wait_for(lambda: len(sink.messages) >= 2, 10)
    time.sleep(1)
    assert sorted(m["To"] for m in sink.messages) == ["a@example.org", "b@example.org"]
    for mail in sink.messages:
        assert mail.get_content().splitlines()[0] == "5 new comments:"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_while_closing_loses_nothing_and_sends_nothing_twice(workers, sink, tmp_path):
    hold = tmp_path / "hold"
    hold.write_text("hold")
    closing = Path(str(hold) + ".closing")
    for i in range(3):
        schedule_messages(HeldDigestMessage({"text": f"event {i}"}),
                          recipients("smtp", [f"r{n}@example.org" for n in range(4)]))
    DigestWindow.objects.update(closes_at=timezone.now())
    doomed = workers("doomed", smtp_port=sink.port, TEST_DIGEST_HOLD=str(hold))
    current_app.send_task("dispatcher.close_digests", queue="dispatcher")
    wait_for(closing.exists, 60, 0.05, "the worker to be inside the closing transaction")
    doomed.kill()  # SIGKILL, mid-transaction
    hold.unlink()

    def state() -> tuple:
        return (sorted(DigestWindow.objects.values_list("status", flat=True)), Message.objects.count())

    wait_for(lambda: state() == (["open"] * 4, 0), 30, 0.2, "the killed transaction to be rolled back")
    workers("heir", smtp_port=sink.port)
    current_app.send_task("dispatcher.close_digests", queue="dispatcher")
    wait_for(lambda: Counter(Dispatch.objects.values_list("status", flat=True)) == {"sent": 4}, 60, 0.2,
             "the four digests sent by the next worker")
    wait_for(lambda: len(sink.messages) >= 4, 10)
    time.sleep(1)
    assert sorted(m["To"] for m in sink.messages) == [f"r{n}@example.org" for n in range(4)]
    for message in Message.objects.all():
        assert [i["text"] for i in message.context["items"]] == ["event 0", "event 1", "event 2"]
    assert json.dumps(state()) == json.dumps((["closed"] * 4, 4))
