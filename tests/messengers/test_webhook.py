"""Signed webhooks against a real receiver on loopback that checks the signature itself."""

from __future__ import annotations

import time

import pytest

from dispatcher.api import recipients, register_messenger_objects
from messengers.exceptions import InvalidAddress
from messengers.webhook import WebhookMessenger, sign, verify_signature
from tests.fakes.webhook import WebhookReceiver

from .conftest import delay, deliver, errors

pytestmark = pytest.mark.django_db

SECRET = "whsec-signing-secret-abc"


@pytest.fixture
def receiver(serve):
    app = WebhookReceiver(SECRET, slow_seconds=2)
    app.server = serve(app)
    register_messenger_objects(WebhookMessenger(SECRET, read_timeout=0.5))
    return app


def test_signed_json_post_to_the_address_url(receiver):
    before = int(time.time())
    [dispatch] = deliver("webhook", "Hi there!", receiver.server.url + "/hooks/ok")
    assert dispatch.status == "sent"
    [request] = receiver.server.received
    assert (request.method, request.path) == ("POST", "/hooks/ok")
    assert receiver.valid == [True]
    assert before <= int(request.headers["x-dispatcher-timestamp"]) <= time.time() + 1
    assert request.headers["x-dispatcher-delivery"] == str(dispatch.pk)
    assert request.json["text"] == "Hi there!" and request.json["dispatch_id"] == dispatch.pk
    assert request.json["address"] == receiver.server.url + "/hooks/ok"


def test_configured_url_with_the_address_in_the_payload(receiver):
    register_messenger_objects(WebhookMessenger(SECRET, url=receiver.server.url + "/in/accepted"))
    [dispatch] = deliver("webhook", "Hi", "user-42")
    assert dispatch.status == "sent"
    [request] = receiver.server.received
    assert request.path == "/in/accepted" and request.json["address"] == "user-42"


def test_wrong_secret_is_refused_by_the_receiver(receiver):
    register_messenger_objects(WebhookMessenger("another-secret"))
    [dispatch] = deliver("webhook", "Hi", receiver.server.url + "/ok")
    assert dispatch.status == "failed" and receiver.valid == [False]
    assert "HTTP 401" in errors(dispatch)[0].text


@pytest.mark.parametrize(("path", "status", "expected"), [
    ("/gone", "failed", "HTTP 410"),
    ("/bad", "failed", "HTTP 400"),
    ("/moved", "failed", "HTTP 302 redirect"),
    ("/busy", "error", "HTTP 503"),
    ("/limited", "error", "HTTP 429"),
    ("/slow", "error", "timed out waiting for the answer"),
])
def test_answers_map_to_outcomes(receiver, path, status, expected):
    [dispatch] = deliver("webhook", "Hi", receiver.server.url + "/secret-path-token" + path)
    assert dispatch.status == status
    text = errors(dispatch)[0].text
    assert expected in text
    assert "secret-path-token" not in text  # only the origin is named
    if path == "/limited":
        assert 40 <= delay(dispatch) <= 45


def test_a_429_holds_back_only_that_receiver(receiver, serve):
    other = WebhookReceiver(SECRET)
    other.server = serve(other)
    sent = deliver("webhook", "Hi", [receiver.server.url + "/limited", receiver.server.url + "/ok",
                                     other.server.url + "/ok"])
    assert [d.status for d in sent] == ["error", "error", "sent"]
    assert len(receiver.server.received) == 1


def test_address_must_be_a_url_without_a_configured_one():
    register_messenger_objects(WebhookMessenger(SECRET))
    with pytest.raises(InvalidAddress):
        recipients("webhook", "user-42")


def test_verify_signature_for_receivers():
    body, ts = b'{"a":1}', str(int(time.time()))
    signature = sign(SECRET, ts, body)
    assert verify_signature(SECRET, ts, body, signature)
    assert not verify_signature(SECRET, ts, body + b" ", signature)
    assert not verify_signature("other", ts, body, signature)
    assert not verify_signature(SECRET, str(int(ts) - 301), body, sign(SECRET, str(int(ts) - 301), body))
