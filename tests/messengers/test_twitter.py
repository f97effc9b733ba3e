"""X (Twitter) against a fake X API v2 that verifies OAuth 1.0a signatures."""

from __future__ import annotations

import time

import pytest

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.exceptions import MessageTooLong
from dispatcher.models import Dispatch, Message
from messengers.exceptions import InvalidAddress
from messengers.twitter import TwitterMessenger
from tests.fakes.twitter import FakeX

from .conftest import delay, deliver, errors

pytestmark = pytest.mark.django_db

KEYS = ("consumer-key-abc123", "consumer-secret-def456", "access-token-ghi789", "token-secret-jkl012")


@pytest.fixture
def fake(serve):
    app = FakeX(*KEYS, users={"idlesign": "2244994945"})
    app.server = serve(app)
    app.base_url = app.server.url
    register_messenger_objects(TwitterMessenger(*KEYS, api_base=app.server.url))
    return app


def test_empty_address_posts_a_tweet_signed_with_oauth1(fake):
    [dispatch] = deliver("twitter", "Hi there!", "")
    assert dispatch.status == "sent"
    [request] = fake.server.received
    assert (request.method, request.path, request.json) == ("POST", "/2/tweets", {"text": "Hi there!"})
    [oauth] = fake.oauth
    assert oauth["oauth_consumer_key"] == KEYS[0] and oauth["oauth_token"] == KEYS[2]
    assert oauth["oauth_signature_method"] == "HMAC-SHA1" and oauth["oauth_version"] == "1.0"
    assert oauth["oauth_signature"] and oauth["oauth_nonce"]
    assert fake.tweets == ["Hi there!"]  # the fake only accepts a valid signature
    assert dispatch.result["tweet_id"]  # X's id of the post


def test_username_address_posts_a_tweet_addressed_to_the_user(fake):
    [dispatch] = deliver("twitter", "Hi there!", "idlesign")
    assert dispatch.status == "sent"
    assert fake.tweets == ["@idlesign Hi there!"]


def test_wrong_secret_is_refused_by_x_and_fails(fake):
    register_messenger_objects(TwitterMessenger(KEYS[0], "not-the-secret", KEYS[2], KEYS[3],
                                                api_base=fake.server.url))
    [dispatch] = deliver("twitter", "Hi", "")
    assert dispatch.status == "failed"
    assert "HTTP 401" in errors(dispatch)[0].text
    assert fake.tweets == []


def test_direct_messages_look_the_user_up_then_send(fake):
    register_messenger_objects(TwitterMessenger(*KEYS, direct_messages=True, api_base=fake.server.url))
    [dispatch] = deliver("twitter", "Psst", "idlesign")
    assert dispatch.status == "sent"
    assert [(r.method, r.path) for r in fake.server.received] == [
        ("GET", "/2/users/by/username/idlesign"),
        ("POST", "/2/dm_conversations/with/2244994945/messages"),
    ]
    assert fake.dms == [("2244994945", "Psst")]
    assert len(fake.oauth) == 2 and fake.tweets == []


def test_direct_message_to_an_unknown_user_fails(fake):
    register_messenger_objects(TwitterMessenger(*KEYS, direct_messages=True, api_base=fake.server.url))
    [dispatch] = deliver("twitter", "Psst", "nobody_here")
    assert dispatch.status == "failed"
    assert "Could not find user with username: [nobody_here]" in errors(dispatch)[0].text


def test_text_over_280_characters_is_refused_at_scheduling_and_nothing_is_written(fake):
    with pytest.raises(MessageTooLong, match="281 characters; messenger 'twitter' takes at most 280"):
        schedule_messages("a" * 281, recipients("twitter", ""))
    assert not Message.objects.exists() and not Dispatch.objects.exists()
    assert fake.server.received == []


def test_a_reply_mention_that_makes_the_text_too_long_fails_with_the_reason(fake):
    [dispatch] = deliver("twitter", "a" * 275, "idlesign")  # "@idlesign " + 275 = 285
    assert dispatch.status == "failed"
    assert "285 characters, X accepts at most 280" in errors(dispatch)[0].text
    assert fake.server.received == []


def test_truncate_option_cuts_long_texts(fake):
    register_messenger_objects(TwitterMessenger(*KEYS, truncate=True, api_base=fake.server.url))
    [dispatch] = deliver("twitter", "word " * 100, "")
    assert dispatch.status == "sent"
    [tweet] = fake.tweets
    assert len(tweet) <= 280 and tweet.endswith("…")


def test_rate_limit_reset_header_becomes_the_retry_delay(fake):
    fake.rate_limited_until = int(time.time()) + 120
    [dispatch] = deliver("twitter", "Hi", "")
    assert dispatch.status == "error"
    assert 110 <= delay(dispatch) <= 121
    assert "HTTP 429" in errors(dispatch)[0].text


def test_duplicate_content_is_permanent(fake):
    fake.tweets.append("Same again")
    [dispatch] = deliver("twitter", "Same again", "")
    assert dispatch.status == "failed"
    [error] = errors(dispatch)
    assert error.permanent and "duplicate content" in error.text


def test_usernames_are_validated():
    register_messenger_objects(TwitterMessenger(*KEYS))
    assert recipients("twitter", "@idlesign")[0].address == "idlesign"
    with pytest.raises(InvalidAddress):
        recipients("twitter", "not a user name")
