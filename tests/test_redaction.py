"""Redaction masks the password of a URL with or without a user name."""

from __future__ import annotations

import logging
import logging.config

import pytest
from django.conf import settings

from messengers.redact import redact


@pytest.mark.parametrize(("text", "masked"), [
    ("redis://:hunter2@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
    ("rediss://:p%40ss@cache:6380/1 refused", "rediss://:***@cache:6380/1 refused"),
    ("amqp://dispatcher:hunter2@rabbit:5672/vhost", "amqp://dispatcher:***@rabbit:5672/vhost"),
    ("socks5h://u:p@127.0.0.1:1080", "socks5h://u:***@127.0.0.1:1080"),
    ("Error 111 connecting to redis://:s3cr3t@10.0.0.5:6379.", "Error 111 connecting to redis://:***@10.0.0.5:6379."),
])
def test_url_passwords_are_masked(text, masked):
    assert redact(text) == masked


@pytest.mark.parametrize("text", [
    "https://example.org:8443/path@tag",
    "http://host:8080/",
    "mailto:someone@example.org",
    "redis://redis.internal:6379/0",
])
def test_urls_without_a_password_are_left_alone(text):
    assert redact(text) == text


def test_a_logged_traceback_quoting_a_password_is_masked_on_the_console(capfd):
    """What a 500 logs (django.request, with the traceback) goes through the
    console handler's filter, as configured in config/settings.py."""
    logging.config.dictConfig(settings.LOGGING)
    try:
        raise ConnectionError("could not connect to redis://:s3cr3t-pass@10.0.0.1:6379/0")
    except ConnectionError:
        logging.getLogger("django.request").exception("Internal Server Error: /dispatcher/ops/")
    err = capfd.readouterr().err
    assert "Internal Server Error" in err and "ConnectionError" in err
    assert "s3cr3t-pass" not in err and "redis://:***@10.0.0.1" in err
