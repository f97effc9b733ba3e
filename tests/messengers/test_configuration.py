"""Construction as the seed shows it, and from settings as docs/messengers.md shows it."""

from __future__ import annotations

import pytest
from django.test import override_settings

from dispatcher import registry
from dispatcher.api import (
    get_registered_messenger_object,
    recipients,
    register_messenger_objects,
    schedule_messages,
)
from messengers.exceptions import MessengerConfigurationError
from messengers.fb import FacebookMessenger
from messengers.telegram import TelegramMessenger
from messengers.twitter import TwitterMessenger
from messengers.vk import VKontakteMessenger

pytestmark = pytest.mark.django_db


def test_the_seed_examples():
    register_messenger_objects(
        TelegramMessenger("token", proxy={"https": "socks5://user:pass@host:port"}),
        VKontakteMessenger("vk-token"),
        FacebookMessenger("fb-token"),
        TwitterMessenger("key", "secret", "access", "access-secret"),
    )
    [(_, [dispatch])] = schedule_messages("Hi there!", recipients("telegram", "12345678"))
    assert (dispatch.messenger, dispatch.address, dispatch.status) == ("telegram", "12345678", "pending")
    assert recipients("vk", "-12345")[0].address == "-12345"
    assert recipients("fb", "")[0].address == ""
    assert recipients("twitter", "idlesign")[0].address == "idlesign"
    assert recipients("twitter", "")[0].address == ""


def test_a_proxy_with_an_unknown_scheme_is_refused_at_construction():
    with pytest.raises(MessengerConfigurationError, match="socks5"):
        TelegramMessenger("token", proxy={"https": "ftp://host:21"})


SETTINGS = {
    "telegram": {"class": "messengers.telegram.TelegramMessenger",
                 "options": {"auth_token": "123:abc", "proxy": {"https": "socks5h://u:p@127.0.0.1:1080"},
                             "parse_mode": "HTML"}},
    "twitter": {"class": "messengers.twitter.TwitterMessenger",
                "options": {"api_key": "k", "api_secret": "s", "access_token": "t",
                            "access_token_secret": "ts", "direct_messages": False}},
    "fb": {"class": "messengers.fb.FacebookMessenger",
           "options": {"page_access_token": "EAAB", "page_id": "1122", "api_version": "v21.0"}},
    "vk": {"class": "messengers.vk.VKontakteMessenger",
           "options": {"access_token": "vk1.a.x", "owner_id": "-12345"}},
    "sms": {"class": "messengers.sms.TwilioSMSMessenger",
            "options": {"account_sid": "AC1", "auth_token": "tok", "from_number": "+15005550006"}},
    "postmark": {"class": "messengers.postmark.PostmarkMessenger",
                 "options": {"server_token": "pm", "from_email": "noreply@example.org"}},
    "webhook": {"class": "messengers.webhook.WebhookMessenger",
                "options": {"secret": "whsec", "connect_timeout": 3, "read_timeout": 10}},
    "alerts": {"class": "messengers.telegram.TelegramMessenger",
               "options": {"auth_token": "456:def", "disable_notification": True}},
}


def test_every_messenger_is_configured_from_settings():
    with override_settings(DISPATCHER_MESSENGERS=SETTINGS):
        registry.load_from_settings()
    for alias in SETTINGS:
        assert get_registered_messenger_object(alias).alias == alias
    assert get_registered_messenger_object("alerts").disable_notification is True
    assert get_registered_messenger_object("webhook").read_timeout == 10
    assert recipients("vk", "")[0].address == ""  # the configured owner_id is used
