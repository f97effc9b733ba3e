"""Fallback channels: a dispatch that FAILS moves on to the recipient's next
channel, once, written with the failure; the chain and each hop are kept on
the dispatches. A loopback Telegram Bot API answers as Telegram does (403 for
a bot the user blocked, 400 for an unknown chat); mail goes to real SMTP servers."""

from __future__ import annotations

import json

import pytest

from dispatcher.api import (
    fallback_chain,
    register_messenger_objects,
    retry_now,
    schedule_messages,
    set_channel_order,
    suppress,
)
from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import InvalidArgument, InvalidRecipient
from dispatcher.messages import EmailTextMessage
from dispatcher.models import Dispatch, FallbackHop, Message
from messengers.telegram import TelegramMessenger
from tests import readme
from tests.fakes.server import FakeServer
from tests.fakes.telegram import FakeTelegram, flood
from tests.services import wait_for
from tests.testapp.message_types import HelloMessage

pytestmark = pytest.mark.django_db

TOKEN = "7012345678:AAH-fallback-telegram-token"
BLOCKED, UNKNOWN, FINE = 11111111, 22222222, 33333333


@pytest.fixture
def telegram():
    """A loopback Telegram; ``.options`` configure a messenger for it."""
    fake = FakeTelegram(TOKEN)
    fake.blocked.add(BLOCKED)
    fake.missing.add(UNKNOWN)
    server = FakeServer(fake)
    fake.options = {"auth_token": TOKEN, "api_base": server.url}
    register_messenger_objects(TelegramMessenger(**fake.options))
    try:
        yield fake
    finally:
        server.stop()


@pytest.fixture
def user(django_user_model):
    def make(name: str, chat: int | None = None, email: str | None = None):
        user = django_user_model.objects.create(username=name, email=email or "")
        if chat is not None:
            user.telegram_chat_id = str(chat)
        return user
    return make


def fresh(dispatch: Dispatch) -> Dispatch:
    return Dispatch.objects.select_related("fallback").get(pk=dispatch.pk)


def test_a_blocked_bot_falls_back_to_mail_once_with_the_chain_on_each_hop(telegram, smtp_server, user):
    ann = user("ann", BLOCKED, "ann@example.org")
    [(message, [first])] = schedule_messages(HelloMessage({"subject": "News", "text": "News"}),
                                             fallback_chain(ann, ["telegram", "smtp"]))
    assert (first.messenger, first.address) == ("telegram", str(BLOCKED))
    deliver_batch("telegram", [first.pk])

    first = fresh(first)
    assert first.status == "failed" and "blocked" in first.errors.get().text
    second = Dispatch.objects.exclude(pk=first.pk).get()
    assert (second.message_id, second.messenger, second.address, second.recipient_id, second.status) == (
        message.pk, "smtp", "ann@example.org", ann.pk, "pending")
    chain = [{"messenger": "telegram", "address": str(BLOCKED)},
             {"messenger": "smtp", "address": "ann@example.org"}]
    hop1, hop2 = FallbackHop.objects.get(dispatch=first), FallbackHop.objects.get(dispatch=second)
    assert (hop1.chain, hop1.position, hop1.previous_id, hop1.next_id) == (chain, 0, None, second.pk)
    assert hop1.fell_back_at is not None
    assert (hop2.chain, hop2.position, hop2.previous_id, hop2.next_id) == (chain, 1, first.pk, None)

    deliver_batch("smtp", [second.pk])
    assert fresh(second).status == "sent"
    assert [m["To"] for m in smtp_server.messages] == ["ann@example.org"]

    # Retried by hand and failing again, the first hop does not fall back a second time.
    retry_now(Dispatch.objects.filter(pk=first.pk))
    deliver_batch("telegram", [first.pk])
    assert fresh(first).status == "failed"
    assert Dispatch.objects.count() == 2


def test_the_chain_and_each_hop_are_shown_on_the_dispatch_in_the_admin(telegram, smtp_server, user,
                                                                       admin_client):
    """What an operator sees on each dispatch's page: the whole chain, this
    hop in brackets, the hop before and after it, and when it fell back."""
    ann = user("ann", BLOCKED, "ann@example.org")
    [(_, [first])] = schedule_messages("News", fallback_chain(ann, ["telegram", "smtp"]))
    deliver_batch("telegram", [first.pk])
    second = Dispatch.objects.exclude(pk=first.pk).get()

    import re
    from html import unescape

    def shown(dispatch: Dispatch) -> str:
        page = admin_client.get(f"/admin/dispatcher/dispatch/{dispatch.pk}/change/")
        assert page.status_code == 200
        return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", page.content.decode())))

    first_page, second_page = shown(first), shown(second)
    assert f"[telegram:{BLOCKED}] -> smtp:ann@example.org" in first_page
    assert f"telegram:{BLOCKED} -> [smtp:ann@example.org]" in second_page
    assert "Fell back at" in first_page and "blocked" in first_page  # the failure that made it fall back
    assert f"/admin/dispatcher/dispatch/{second.pk}/change/" in admin_client.get(
        f"/admin/dispatcher/dispatch/{first.pk}/change/").content.decode()  # its next hop, a link


def test_a_temporary_error_is_retried_on_its_own_channel(telegram, smtp_server, user):
    telegram.replies = [flood(30)]
    bob = user("bob", FINE, "bob@example.org")
    [(_, [first])] = schedule_messages("hi", fallback_chain(bob, ["telegram", "smtp"]))
    deliver_batch("telegram", [first.pk])
    assert fresh(first).status == "error"
    assert Dispatch.objects.count() == 1 and FallbackHop.objects.get().next_id is None


def test_a_channel_without_an_address_is_skipped_and_kept_in_the_chain(telegram, smtp_server, user):
    cat = user("cat", None, "cat@example.org")  # never talked to the bot
    [(_, [first])] = schedule_messages("hi", fallback_chain(cat, ["telegram", "smtp"]))
    assert (first.messenger, first.address) == ("smtp", "cat@example.org")
    hop = FallbackHop.objects.get(dispatch=first)
    assert hop.position == 1 and hop.chain[0]["address"] is None
    assert hop.chain[0]["skipped"].startswith("no address")


def test_three_channels_unknown_chat_then_suppressed_mail_then_a_third(telegram, smtp_server, user):
    dan = user("dan", UNKNOWN, "dan@example.org")
    suppress("smtp", "dan@example.org", "bounce")  # his mailbox bounced
    [(_, [first])] = schedule_messages("hi", fallback_chain(dan, ["telegram", "smtp", "mymessenger"]))
    deliver_batch("telegram", [first.pk])
    mail = Dispatch.objects.get(messenger="smtp")
    deliver_batch("smtp", [mail.pk])
    assert fresh(mail).errors.get().text.startswith("suppressed:")
    last = Dispatch.objects.get(messenger="mymessenger")
    deliver_batch("mymessenger", [last.pk])
    assert [d.status for d in Dispatch.objects.order_by("id")] == ["failed", "failed", "sent"]
    assert [h.position for h in FallbackHop.objects.order_by("dispatch_id")] == [0, 1, 2]
    assert smtp_server.messages == []


def test_the_users_own_order_is_followed(telegram, smtp_server, user, settings):
    eve = user("eve", FINE, "eve@example.org")
    settings.DISPATCHER_FALLBACK_CHANNELS = ["telegram", "smtp"]
    assert fallback_chain(eve).messenger == "telegram"  # the site's default
    set_channel_order(eve, ["smtp", "telegram"])
    assert fallback_chain(eve).messenger == "smtp"  # hers, for every type
    set_channel_order(eve, ["telegram", "smtp"], message_type="hello")
    assert fallback_chain(eve, message_type="hello").messenger == "telegram"  # hers, for this type
    assert fallback_chain(eve, message_type="plain").messenger == "smtp"


def test_a_channel_that_cannot_carry_the_type_is_skipped_for_it(telegram, smtp_server, user):
    fay = user("fay", FINE, "fay@example.org")
    chained = fallback_chain(fay, ["telegram", "smtp"], message_type="email_plain")
    assert chained.messenger == "smtp" and "cannot go through" in chained.chain[0]["skipped"]
    [(_, [dispatch])] = schedule_messages(EmailTextMessage("Receipt", "Thanks"), chained)
    assert dispatch.messenger == "smtp"


def test_nobody_reachable_or_a_bad_chain_is_refused_before_anything_is_written(telegram, user):
    ghost = user("ghost")
    with pytest.raises(InvalidRecipient, match="no address on any channel"):
        fallback_chain(ghost, ["telegram", "smtp"])
    with pytest.raises(InvalidArgument):
        fallback_chain(ghost, [])
    with pytest.raises(InvalidArgument):
        fallback_chain(user("gil", FINE), ["telegram", "telegram"])
    assert not Message.objects.exists()


def test_an_address_for_every_channel(telegram, smtp_server):
    """A chain for a raw address (the same one on every channel, as a webhook URL might be)."""
    chained = fallback_chain("ops@example.org", ["smtp", "mymessenger"])
    assert [h["address"] for h in chained.chain] == ["ops@example.org", "ops@example.org"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_through_workers_blocked_telegram_users_get_the_mail(workers, sink, telegram, user):
    workers("fallback", smtp_port=sink.port, TEST_EXTRA_MESSENGERS=json.dumps(
        {"telegram": {"class": "messengers.telegram.TelegramMessenger", "options": telegram.options}}))
    people = [user(f"u{i}", BLOCKED if i % 2 else FINE + i, f"u{i}@example.org") for i in range(10)]
    schedule_messages(HelloMessage({"subject": "Weekly", "text": "Weekly"}),
                      [fallback_chain(p, ["telegram", "smtp"]) for p in people])

    def done() -> bool:
        rows = list(Dispatch.objects.values_list("messenger", "status"))
        return len(rows) == 15 and all(s in ("sent", "failed") for _, s in rows)

    wait_for(done, 60, 0.2, "10 Telegram dispatches, 5 falling back to mail")
    by_channel = sorted(Dispatch.objects.values_list("messenger", "status"))
    assert by_channel == [("smtp", "sent")] * 5 + [("telegram", "failed")] * 5 + [("telegram", "sent")] * 5
    wait_for(lambda: len(sink.messages) >= 5, 10)
    assert sorted(m["To"] for m in sink.messages) == [f"u{i}@example.org" for i in range(1, 10, 2)]
    assert len(telegram.sent) == 5
    assert FallbackHop.objects.filter(fell_back_at__isnull=False).count() == 5


def test_the_readme_example_runs_as_written(telegram, smtp_server, capsys):
    """README, "Fallback channels": its two blocks, with the worker's attempt between them."""
    first_block, second_block = readme.code_blocks(readme.section("Fallback channels"))
    namespace: dict = {}
    exec(first_block, namespace)
    first = namespace["first"]
    assert int(first.address) in telegram.blocked
    deliver_batch("telegram", [first.pk])  # what the worker does
    exec(second_block, namespace)
    assert capsys.readouterr().out.splitlines() == [
        "telegram [('telegram', '11111111'), ('smtp', 'tg-user@example.org')]",
        "failed smtp:tg-user@example.org (pending)",
        "True",
    ]
    [mail] = Dispatch.objects.filter(messenger="smtp")
    deliver_batch("smtp", [mail.pk])
    assert [m["To"] for m in smtp_server.messages] == ["tg-user@example.org"]
