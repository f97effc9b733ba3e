"""Messengers configured from the environment.

Each messenger is registered only when its credentials are set, so a fresh
clone has just ``smtp`` (pointing at the local sink).
"""

from __future__ import annotations

from typing import Any

from .env import env_bool, env_float, env_int, env_str

DEFAULT_FROM = env_str("DISPATCHER_FROM_EMAIL", "dispatcher@localhost")


def _http(proxy_var: str | None = None) -> dict[str, Any]:
    """Options every HTTP messenger shares: timeouts and an optional proxy."""
    options: dict[str, Any] = {
        "connect_timeout": env_float("DISPATCHER_HTTP_CONNECT_TIMEOUT", 5.0),
        "read_timeout": env_float("DISPATCHER_HTTP_READ_TIMEOUT", 30.0),
    }
    if proxy_var and env_str(proxy_var):
        options["proxy"] = env_str(proxy_var)
    return options


def _entry(cls: str, **options: Any) -> dict[str, Any]:
    return {"class": cls, "options": {k: v for k, v in options.items() if v not in (None, "")}}


def _pem(value: str) -> str:
    """A PEM key from one environment variable: "\\n" written as two characters
    (as one-line .env files and CI secrets often hold it) stands for a newline."""
    return value.replace("\\n", "\n") if "\n" not in value else value


def smtp() -> dict[str, Any]:
    """The ``smtp`` messenger, always configured (a fresh clone's points at the local sink).

    It replaces the ``smtp`` entry of ``config/settings.py`` with the same
    variables plus those of the options that entry does not know.
    """
    return _entry(
        "messengers.smtp.SMTPMessenger",
        from_email=env_str("DISPATCHER_FROM_EMAIL", "dispatcher@localhost"),
        host=env_str("DISPATCHER_SMTP_HOST", "127.0.0.1"),
        port=env_int("DISPATCHER_SMTP_PORT", 1025),
        login=env_str("DISPATCHER_SMTP_USER"),
        password=env_str("DISPATCHER_SMTP_PASSWORD"),
        use_tls=env_bool("DISPATCHER_SMTP_USE_TLS", False),
        use_ssl=env_bool("DISPATCHER_SMTP_USE_SSL", False),
        timeout=env_float("DISPATCHER_SMTP_TIMEOUT", 30.0),
        ca_file=env_str("DISPATCHER_SMTP_CA_FILE"),
        keepalive=env_float("DISPATCHER_SMTP_KEEPALIVE", 30.0),
        dkim_selector=env_str("DISPATCHER_SMTP_DKIM_SELECTOR"),
        dkim_domain=env_str("DISPATCHER_SMTP_DKIM_DOMAIN"),
        dkim_key=_pem(env_str("DISPATCHER_SMTP_DKIM_KEY")),
        dkim_key_file=env_str("DISPATCHER_SMTP_DKIM_KEY_FILE"),
        bounce_address=env_str("DISPATCHER_SMTP_BOUNCE_ADDRESS"),
    )


def from_environment() -> dict[str, dict[str, Any]]:
    messengers: dict[str, dict[str, Any]] = {"smtp": smtp()}
    if env_str("DISPATCHER_TELEGRAM_TOKEN"):
        messengers["telegram"] = _entry(
            "messengers.telegram.TelegramMessenger",
            auth_token=env_str("DISPATCHER_TELEGRAM_TOKEN"),
            api_base=env_str("DISPATCHER_TELEGRAM_API_BASE"),
            parse_mode=env_str("DISPATCHER_TELEGRAM_PARSE_MODE"),
            **_http("DISPATCHER_TELEGRAM_PROXY"),
        )
    if env_str("DISPATCHER_TWITTER_API_KEY"):
        messengers["twitter"] = _entry(
            "messengers.twitter.TwitterMessenger",
            api_key=env_str("DISPATCHER_TWITTER_API_KEY"),
            api_secret=env_str("DISPATCHER_TWITTER_API_SECRET"),
            access_token=env_str("DISPATCHER_TWITTER_ACCESS_TOKEN"),
            access_token_secret=env_str("DISPATCHER_TWITTER_ACCESS_TOKEN_SECRET"),
            direct_messages=env_bool("DISPATCHER_TWITTER_DIRECT_MESSAGES", False),
            **_http("DISPATCHER_TWITTER_PROXY"),
        )
    if env_str("DISPATCHER_FB_PAGE_TOKEN"):
        messengers["fb"] = _entry(
            "messengers.fb.FacebookMessenger",
            page_access_token=env_str("DISPATCHER_FB_PAGE_TOKEN"),
            page_id=env_str("DISPATCHER_FB_PAGE_ID", "me"),
            api_version=env_str("DISPATCHER_FB_API_VERSION"),
            app_secret=env_str("DISPATCHER_FB_APP_SECRET"),
            **_http("DISPATCHER_FB_PROXY"),
        )
    if env_str("DISPATCHER_VK_TOKEN"):
        messengers["vk"] = _entry(
            "messengers.vk.VKontakteMessenger",
            access_token=env_str("DISPATCHER_VK_TOKEN"),
            owner_id=env_str("DISPATCHER_VK_OWNER_ID"),
            api_base=env_str("DISPATCHER_VK_API_BASE"),
            **_http("DISPATCHER_VK_PROXY"),
        )
    if env_str("DISPATCHER_TWILIO_ACCOUNT_SID"):
        messengers["sms"] = _entry(
            "messengers.sms.TwilioSMSMessenger",
            account_sid=env_str("DISPATCHER_TWILIO_ACCOUNT_SID"),
            auth_token=env_str("DISPATCHER_TWILIO_AUTH_TOKEN"),
            from_number=env_str("DISPATCHER_SMS_FROM"),
            messaging_service_sid=env_str("DISPATCHER_TWILIO_MESSAGING_SERVICE_SID"),
            **_http(),
        )
    if env_str("DISPATCHER_POSTMARK_TOKEN"):
        messengers["postmark"] = _entry(
            "messengers.postmark.PostmarkMessenger",
            server_token=env_str("DISPATCHER_POSTMARK_TOKEN"),
            from_email=env_str("DISPATCHER_POSTMARK_FROM") or DEFAULT_FROM,
            message_stream=env_str("DISPATCHER_POSTMARK_STREAM"),
            **_http(),
        )
    if env_str("DISPATCHER_WEBHOOK_SECRET"):
        messengers["webhook"] = _entry(
            "messengers.webhook.WebhookMessenger",
            secret=env_str("DISPATCHER_WEBHOOK_SECRET"),
            url=env_str("DISPATCHER_WEBHOOK_URL"),
            **_http(),
        )
    if env_str("DISPATCHER_XMPP_JID"):
        messengers["xmpp"] = {
            "class": "messengers.xmpp.XMPPMessenger",
            "options": {
                "from_jid": env_str("DISPATCHER_XMPP_JID"),
                "password": env_str("DISPATCHER_XMPP_PASSWORD"),
                "host": env_str("DISPATCHER_XMPP_HOST") or None,
                "port": env_int("DISPATCHER_XMPP_PORT", 0) or None,
                "direct_tls": env_bool("DISPATCHER_XMPP_DIRECT_TLS", False),
                "plaintext": env_bool("DISPATCHER_XMPP_PLAINTEXT", False),
                "ca_file": env_str("DISPATCHER_XMPP_CA_FILE") or None,
                "verify": env_bool("DISPATCHER_XMPP_VERIFY", True),
                "proxy": env_str("DISPATCHER_XMPP_PROXY") or None,
                "timeout": env_float("DISPATCHER_XMPP_TIMEOUT", 30),
            },
        }
    return messengers
