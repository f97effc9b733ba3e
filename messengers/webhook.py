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

from .exceptions import InvalidAddress, MessengerConfigurationError, PermanentError
from .http import HTTPMessenger
from .redact import register_secret

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

    def __init__(self, secret: str, url: str | None = None, **http_options: Any) -> None:
        super().__init__(**http_options)
        if not secret:
            raise MessengerConfigurationError("webhook: a signing secret is required")
        if url and not _is_http_url(url):
            raise MessengerConfigurationError("webhook: url must be an http(s) URL")
        register_secret(secret)
        self.secret = secret
        self.target_url = url

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if not self.target_url and not _is_http_url(address):
            raise InvalidAddress("webhook: the address must be an http(s) URL (no url= is configured)")
        return address

    def endpoint(self, dispatch: Any) -> str:
        return self.target_url or dispatch.address

    def throttle_key(self, dispatch: Any) -> Any:
        return _origin(self.endpoint(dispatch))  # a 429 from one receiver holds back only that one

    def payload(self, message_model: Any, dispatch: Any) -> dict[str, Any]:
        rendered = dispatch.rendered
        return {
            "dispatch_id": dispatch.pk,
            "message_id": getattr(message_model, "pk", None),
            "message_type": getattr(message_model, "message_type", None),
            "messenger": self.alias,
            "address": dispatch.address,
            "attempt": getattr(dispatch, "attempts", None),
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
        }

    def send_dispatch(self, message_cls: Any, message_model: Any, dispatch: Any) -> None:
        url = self.endpoint(dispatch)
        body = json.dumps(self.payload(message_model, dispatch), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            DELIVERY_HEADER: str(dispatch.pk or ""),
        }
        what = f"POST {_origin(url)}"
        response = self.request("POST", url, what=what, data=body, headers=headers, allow_redirects=False)
        if 300 <= response.status_code < 400:
            raise PermanentError(
                f"webhook {what}: HTTP {response.status_code} redirect (configure the final URL)"
            )
        error = self.http_error(response, what)
        if error:
            raise error
