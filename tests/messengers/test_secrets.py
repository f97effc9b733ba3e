"""No token, password or signing secret in stored error texts or in logs, even at DEBUG
(urllib3 logs request lines with Telegram's /bot<token>/, oauthlib logs signed headers)."""

from __future__ import annotations

import logging

import pytest

from dispatcher.api import register_messenger_objects
from dispatcher.limiter import get_backend
from dispatcher.models import DispatchError
from messengers.fb import FacebookMessenger
from messengers.postmark import PostmarkMessenger
from messengers.sms import TwilioSMSMessenger
from messengers.telegram import TelegramMessenger
from messengers.twitter import TwitterMessenger
from messengers.vk import VKontakteMessenger
from messengers.webhook import WebhookMessenger
from tests.fakes.facebook import FakeGraph
from tests.fakes.postmark import FakePostmark
from tests.fakes.server import Reply
from tests.fakes.telegram import BAD_GATEWAY, FakeTelegram, flood
from tests.fakes.twilio import FakeTwilio
from tests.fakes.twitter import FakeX
from tests.fakes.vk import FakeVK
from tests.fakes.webhook import WebhookReceiver
from tests.services import free_port

from .conftest import deliver

pytestmark = pytest.mark.django_db

TG = "7012345678:AAH-tg-secret-for-the-leak-test"
X_KEYS = ("x-consumer-key-leak", "x-consumer-secret-leak", "x-access-token-leak", "x-token-secret-leak")
FB, VK, SMS, PM, HOOK = "EAAB-fb-secret-leak", "vk1.a.vk-secret-leak", "twilio-secret-leak", \
    "postmark-secret-leak", "webhook-secret-leak"
PROXY_PASSWORD = "proxy-password-leak"
SECRETS = [TG, *X_KEYS, FB, VK, SMS, PM, HOOK, PROXY_PASSWORD]


def test_no_secret_in_error_texts_or_logs(serve, caplog):
    caplog.set_level(logging.DEBUG)
    telegram = FakeTelegram(TG)
    telegram.blocked.add(1)
    telegram.replies = [BAD_GATEWAY, flood(5)]
    tg = serve(telegram)
    register_messenger_objects(TelegramMessenger(TG, api_base=tg.url))
    deliver("telegram", "Hi", "2")  # 502
    deliver("telegram", "Hi", "2")  # 429
    get_backend().reset("telegram")  # the flood wait is over (it paused telegram for every worker)
    deliver("telegram", "Hi", "1")  # 403
    dead = f"socks5://user:{PROXY_PASSWORD}@127.0.0.1:{free_port()}"
    register_messenger_objects(TelegramMessenger(TG, proxy=dead, api_base=tg.url))
    deliver("telegram", "Hi", "2")  # dead proxy

    x = FakeX(*X_KEYS)
    x.server = serve(x)
    x.base_url = x.server.url
    x.tweets.append("dup")
    register_messenger_objects(TwitterMessenger(*X_KEYS, api_base=x.server.url))
    deliver("twitter", "dup", "")  # 403 duplicate
    register_messenger_objects(TwitterMessenger(*X_KEYS[:3], "x-wrong-secret-leak", api_base=x.server.url))
    deliver("twitter", "Hi", "")  # 401
    SECRETS.append("x-wrong-secret-leak")

    graph = FakeGraph("v21.0", "1", "EAAB-other-token")
    register_messenger_objects(FacebookMessenger(FB, api_base=serve(graph).url))
    deliver("fb", "Hi", "")  # 190
    vk = FakeVK("vk1.a.the-right-one")
    register_messenger_objects(VKontakteMessenger(VK, api_base=serve(vk).url + "/method/"))
    deliver("vk", "Hi", "-1")  # error 5
    twilio = FakeTwilio("AC1", "another-token")
    register_messenger_objects(TwilioSMSMessenger("AC1", SMS, "+15005550006", api_base=serve(twilio).url))
    deliver("sms", "Hi", "+15551230000")  # 401
    postmark = FakePostmark("another-token")
    register_messenger_objects(PostmarkMessenger(PM, "a@example.org", api_base=serve(postmark).url))
    deliver("postmark", "Hi", "b@example.org")  # 401
    receiver = WebhookReceiver("another-secret")
    receiver_server = serve(receiver)
    register_messenger_objects(WebhookMessenger(HOOK))
    deliver("webhook", "Hi", receiver_server.url + "/ok")  # 401

    texts = list(DispatchError.objects.values_list("text", flat=True))
    assert len(texts) == 11
    assert "/bot" in caplog.text and "oauth" in caplog.text.lower()  # the debug logs were captured
    for secret in SECRETS:
        assert not any(secret in text for text in texts), secret
        assert secret not in caplog.text, secret


def test_unexpected_answer_text_is_kept_without_the_token(serve):
    telegram = FakeTelegram(TG)
    telegram.replies = [Reply(200, {"ok": False, "description": f"odd answer mentioning {TG}"})]
    register_messenger_objects(TelegramMessenger(TG, api_base=serve(telegram).url))
    [dispatch] = deliver("telegram", "Hi", "2")
    [text] = dispatch.errors.values_list("text", flat=True)
    assert "odd answer mentioning" in text and TG not in text
