"""Redaction masks the password of a URL with or without a user name."""

from __future__ import annotations

import pytest

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
