"""Messengers configured from the environment, as an operator does it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from messengers.redact import redact
from tests.services import BASE


def registered(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")
             and k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}}
    code = ("import django, json; django.setup();"
            "from dispatcher.api import get_registered_messenger_objects as g;"
            "print(json.dumps({a: type(m).__name__ for a, m in g().items()}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BASE, check=True, capture_output=True, text=True,
                         env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings",
                              "DISPATCHER_VAR_DIR": str(BASE / "var" / "settings-test"), **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_environment_has_only_smtp_and_the_feed():
    # inapp is registered by the feed app (dispatcher.feed), installed in the demo site.
    assert registered({}) == {"smtp": "SMTPMessenger", "inapp": "InAppMessenger"}


def test_every_messenger_from_its_environment_variables():
    found = registered({
        "DISPATCHER_TELEGRAM_TOKEN": "123:abc", "DISPATCHER_TELEGRAM_PROXY": "socks5h://u:p@127.0.0.1:1080",
        "DISPATCHER_TWITTER_API_KEY": "k", "DISPATCHER_TWITTER_API_SECRET": "s",
        "DISPATCHER_TWITTER_ACCESS_TOKEN": "t", "DISPATCHER_TWITTER_ACCESS_TOKEN_SECRET": "ts",
        "DISPATCHER_FB_PAGE_TOKEN": "fbtoken", "DISPATCHER_VK_TOKEN": "vktoken",
        "DISPATCHER_VK_OWNER_ID": "-1", "DISPATCHER_TWILIO_ACCOUNT_SID": "AC123",
        "DISPATCHER_TWILIO_AUTH_TOKEN": "tw", "DISPATCHER_SMS_FROM": "+15005550006",
        "DISPATCHER_POSTMARK_TOKEN": "pm", "DISPATCHER_WEBHOOK_SECRET": "whsecret",
        "DISPATCHER_WEBHOOK_URL": "https://example.org/hook",
        "DISPATCHER_XMPP_JID": "bot@example.org", "DISPATCHER_XMPP_PASSWORD": "pw",
    })
    assert found == {
        "smtp": "SMTPMessenger", "telegram": "TelegramMessenger", "twitter": "TwitterMessenger",
        "fb": "FacebookMessenger", "vk": "VKontakteMessenger", "sms": "TwilioSMSMessenger",
        "postmark": "PostmarkMessenger", "webhook": "WebhookMessenger", "xmpp": "XMPPMessenger",
        "inapp": "InAppMessenger",
    }


def test_redaction_keeps_ordinary_words_after_authorization():
    assert redact("User authorization failed: no access_token passed") == (
        "User authorization failed: no access_token passed"
    )
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
