"""Signed webhooks: each dispatch is POSTed as JSON to an HTTP endpoint.

Two ways to address, chosen by configuration:

- ``WebhookMessenger(secret)``: the address *is* the URL,
  ``recipients('webhook', 'https://example.org/hooks/dispatcher')``;
- ``WebhookMessenger(secret, url='https://example.org/hooks')``: every
  dispatch goes to that URL, and the address (any string) is in the payload.

Each request carries ``X-Dispatcher-Timestamp`` (Unix seconds) and
``X-Dispatcher-Signature: sha256=<hex>``, the HMAC-SHA256 with the secret of
``<timestamp>.<raw body>``; receivers check both with :func:`verify_signature`
(and refuse old timestamps, so a captured request cannot be replayed).
``X-Dispatcher-Delivery`` is the dispatch id, the same on every retry, for
receivers that drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

from .base import Envelope, MessageInfo
from .exceptions import InvalidAddress, MessengerConfigurationError, MessengerError, PermanentError
from .http import Call, HTTPMessenger

SIGNATURE_HEADER = "X-Dispatcher-Signature"
TIMESTAMP_HEADER = "X-Dispatcher-Timestamp"
DELIVERY_HEADER = "X-Dispatcher-Delivery"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, tolerance: float = 300, now: float | None = None
) -> bool:
    """For receivers: True when ``signature`` is ours and ``timestamp`` within ``tolerance`` seconds."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature or "")


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: the path and query may hold a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value


class WebhookMessenger(HTTPMessenger):
    """POSTs each dispatch as signed JSON: 2xx is sent, 429/5xx/timeouts are
    retried, redirects and other 4xx fail."""

    alias = "webhook"
    title = "Webhook"
    secret_options = ("secret",)

    def __init__(self, secret: str, url: str | None = None, **http_options: Any) -> None:
        super().__init__(**http_options)
        if not secret:
            raise MessengerConfigurationError("webhook: a signing secret is required")
        if url and not _is_http_url(url):
            raise MessengerConfigurationError("webhook: url must be an http(s) URL")
        self.secret = secret
        self.target_url = url

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if not self.target_url and not _is_http_url(address):
            raise InvalidAddress("webhook: the address must be an http(s) URL (no url= is configured)")
        return address

    def endpoint(self, envelope: Envelope) -> str:
        return self.target_url or envelope.address

    def throttle_key(self, envelope: Envelope) -> Any:
        return _origin(self.endpoint(envelope))  # a 429 from one receiver holds back only that one

    def payload(self, message: MessageInfo, envelope: Envelope) -> dict[str, Any]:
        rendered = envelope.rendered
        return {
            "dispatch_id": envelope.id,
            "message_id": message.id,
            "message_type": message.message_type or None,
            "messenger": self.alias,
            "address": envelope.address,
            "attempt": envelope.attempt,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
        }

    def build_request(self, envelope: Envelope) -> Call:
        url = self.endpoint(envelope)
        body = json.dumps(self.payload(envelope.message, envelope), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            DELIVERY_HEADER: str(envelope.id or ""),
        }
        return Call("POST", url, f"POST {_origin(url)}",
                    {"data": body, "headers": headers, "allow_redirects": False})

    def error_for(self, response: Any, body: Any, what: str) -> MessengerError | None:
        if 300 <= response.status_code < 400:
            return PermanentError(
                f"webhook {what}: HTTP {response.status_code} redirect (configure the final URL)"
            )
        return self.http_error(response, what)
