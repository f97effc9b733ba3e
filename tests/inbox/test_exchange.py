"""Who may write to whom: blocks and the exchange filter, in pm_write and the JSON API,
with the examples of docs/inbox.md."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from dispatcher.inbox.api import Inbox, PrivateMessage, RecipientRefused, pm_broadcast, pm_write
from dispatcher.inbox.exchange import block, refusal, unblock
from tests.testapp.models import Follow

pytestmark = pytest.mark.django_db


def test_a_blocked_sender_gets_a_clear_error_from_pm_write(users):
    block(users.bob, users.ann)
    with pytest.raises(RecipientRefused, match="you cannot write to bob: this user does not accept messages"):
        pm_write(users.ann, users.bob, "hi", "x")
    with pytest.raises(RecipientRefused):
        Inbox.send_message(users.ann, users.bob, "hi")
    assert not PrivateMessage.objects.exists()
    pm_write(users.bob, users.ann, "bob may still write", "x")  # a block is one-way
    pm_write(users.ann, users.bob, "the site itself", "x", check_exchange=False)
    pm_broadcast(users.ann, [users.bob], "announcement")  # broadcasts are the site's: trusted
    assert unblock(users.bob, users.ann) is True
    pm_write(users.ann, users.bob, "hi again", "x")
    with pytest.raises(ValueError):
        block(users.ann, users.ann)


def test_the_json_api_answers_the_refusal(users, settings):
    settings.DISPATCHER_INBOX_EXCHANGE_FILTER = "tests.testapp.messaging.only_mutual_followers"
    client = Client()
    client.force_login(users.ann)
    response = client.post(reverse("dispatcher:api:send"), json.dumps({"recipient": "bob", "subject": "hi"}),
                           content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "error": "you cannot write to bob: you can only write to people who follow you back"}


def test_only_mutual_followers(users, settings):
    settings.DISPATCHER_INBOX_EXCHANGE_FILTER = "tests.testapp.messaging.only_mutual_followers"
    Follow.objects.create(follower=users.ann, followed=users.bob)
    assert refusal(users.ann, users.bob) == "you can only write to people who follow you back"
    Follow.objects.create(follower=users.bob, followed=users.ann)
    assert refusal(users.ann, users.bob) is None
    pm_write(users.ann, users.bob, "hi", "x")
    assert refusal(None, users.bob) == "sign in to write"
    assert refusal(users.ann, "visitor@example.org") is None  # a visitor's address is never refused


def test_not_to_users_you_blocked(users, settings):
    settings.DISPATCHER_INBOX_EXCHANGE_FILTER = "tests.testapp.messaging.not_to_users_you_blocked"
    block(users.ann, users.bob)
    assert refusal(users.ann, users.bob) == "you blocked this user"
    assert refusal(users.bob, users.ann) == "this user does not accept messages from you"


@pytest.mark.parametrize("verdict, reason", [
    (None, None), (True, None),
    ("", "you may not write to this user"), (False, "you may not write to this user"),
    ("not today", "not today"),
])
def test_what_a_filter_may_answer(users, settings, verdict, reason):
    seen = []

    def check(sender, recipient, recipients):
        seen.append((sender, recipient, list(recipients)))
        return verdict

    settings.DISPATCHER_INBOX_EXCHANGE_FILTER = check
    assert refusal(users.ann, users.bob, [users.bob, users.cat]) == reason
    assert seen == [(users.ann, users.bob, [users.bob, users.cat])]
