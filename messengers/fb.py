"""Facebook pages, through the Graph API page feed (``POST /{page-id}/feed``).

``FacebookMessenger(page_access_token)``. The address ``''`` posts to the
page the token belongs to (or ``page_id=``); another address is a page id.
``FacebookMessenger(token, proxy)`` as django-sitemessage takes it works too.
A text that is a single URL is posted as a link, anything else as a message.
Page tokens come from :func:`get_page_tokens`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import requests

from .base import Envelope
from .exceptions import InvalidAddress, MessengerError, PermanentError, RateLimited, TemporaryError
from .http import Call, HTTPMessenger
from .proxy import ProxySpec, take_positional_proxy
from .redact import redact, register_secret

DEFAULT_API_VERSION = "v21.0"
TEMPORARY_CODES = {1, 2}
THROTTLING_CODES = {4, 17, 32, 341, 613, 80001}
PERMANENT_CODES = {10, 190, 506} | set(range(200, 300))
_URL = re.compile(r"https?://\S+")


def usage_delay(response: requests.Response) -> float | None:
    """Seconds until Meta lifts throttling, from the usage headers, if it says."""
    minutes = 0.0
    for header in ("X-Business-Use-Case-Usage", "X-Page-Usage", "X-App-Usage", "X-Ad-Account-Usage"):
        try:
            usage = json.loads(response.headers.get(header) or "null")
        except ValueError:
            continue
        entries: list[Any] = [usage] if isinstance(usage, dict) else []
        if isinstance(usage, dict) and header == "X-Business-Use-Case-Usage":
            entries = [e for values in usage.values() if isinstance(values, list) for e in values]
        for entry in entries:
            if isinstance(entry, dict):
                value = entry.get("estimated_time_to_regain_access")
                if isinstance(value, (int, float)):
                    minutes = max(minutes, float(value))
    return minutes * 60 if minutes > 0 else None


class FacebookMessenger(HTTPMessenger):
    """Posts to a Facebook page's feed with a page access token."""

    alias = "fb"
    title = "Facebook"
    api_base = "https://graph.facebook.com"
    address_attribute = "facebook_page_id"
    requires_text = True
    secret_options = ("page_access_token", "app_secret")

    def __init__(
        self,
        page_access_token: str,
        page_id: str | ProxySpec = "me",
        *,
        api_version: str = DEFAULT_API_VERSION,
        app_secret: str | None = None,
        throttle_delay: float = 600,
        **http_options: Any,
    ) -> None:
        # django-sitemessage's FacebookMessenger(token, proxy): a proxy in the
        # page id's place (a dict, a callable, a URL) is the proxy.
        if take_positional_proxy("fb", page_id, http_options):
            page_id = "me"
        super().__init__(**http_options)
        self.page_access_token = page_access_token
        self.page_id = str(page_id or "me")
        self.api_version = api_version
        self.app_secret = app_secret
        self.throttle_delay = throttle_delay

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if address and not re.fullmatch(r"[A-Za-z0-9_.]+", address):
            raise InvalidAddress(f"fb: {address!r} is not a page id")
        return address

    def url(self, path: str) -> str:
        return super().url(f"{self.api_version}/{path.lstrip('/')}")

    def error_for(self, response: requests.Response, body: Any, what: str) -> MessengerError | None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return self.graph_error(error, response, what)
        failure = self.http_error(response, what)
        if failure is None and not isinstance(body, dict):
            return TemporaryError(f"fb {what}: HTTP {response.status_code}, not JSON")
        return failure

    def graph_error(self, error: dict[str, Any], response: requests.Response, what: str) -> MessengerError:
        code = error.get("code")
        subcode = error.get("error_subcode")
        reason = redact(f"error {code}" + (f"/{subcode}" if subcode else "")
                        + f" {error.get('type', '')}: {error.get('message', '')}")
        text = f"fb {what}: {reason}"
        if code in THROTTLING_CODES:
            delay = usage_delay(response) or self.throttle_delay
            return RateLimited(text + " (throttled)", retry_after=delay)
        if code in TEMPORARY_CODES or error.get("is_transient") is True:
            return TemporaryError(text)
        if code == 190:
            return PermanentError(text + " (the page token expired or was revoked: make a new one)")
        if code in PERMANENT_CODES:
            return PermanentError(text)
        return self.http_error(response, what, reason) or PermanentError(text)

    def build_request(self, envelope: Envelope) -> Call:
        text = (envelope.rendered.text or "").strip()
        page = envelope.address or self.page_id
        data = {"link": text} if _URL.fullmatch(text) else {"message": text}
        data["access_token"] = self.page_access_token  # in the body, never in the URL
        if self.app_secret:
            data["appsecret_proof"] = hmac.new(
                self.app_secret.encode(), self.page_access_token.encode(), hashlib.sha256
            ).hexdigest()
        return Call("POST", f"{page}/feed", f"POST /{page}/feed", {"data": data})

    def read_result(self, body: Any) -> dict[str, Any] | None:
        return {"post_id": body.get("id")} if isinstance(body, dict) and body.get("id") else None


def get_page_tokens(
    app_id: str, app_secret: str, user_token: str, **options: Any
) -> list[dict[str, Any]]:
    """Page access tokens of the pages a user manages: ``[{'id', 'name', 'access_token', ...}]``.

    Exchanges the (short-lived) user token for a long-lived one, then lists
    ``/me/accounts``; page tokens obtained from a long-lived user token do not
    expire. ``options`` are FacebookMessenger's (``api_version``, ``api_base``, ``proxy``...).
    """
    register_secret(app_secret, user_token)
    client = FacebookMessenger("", **options)
    client.open()
    try:
        exchanged = client.call("GET", "oauth/access_token", what="token exchange", params={
            "grant_type": "fb_exchange_token", "client_id": app_id,
            "client_secret": app_secret, "fb_exchange_token": user_token,
        })
        long_lived = exchanged["access_token"]
        register_secret(long_lived)
        pages: list[dict[str, Any]] = []
        body = client.call("GET", "me/accounts", what="GET /me/accounts", params={"access_token": long_lived})
        while True:
            for page in body.get("data") or []:
                register_secret(page.get("access_token"))
                pages.append(page)
            next_url = (body.get("paging") or {}).get("next")
            if not next_url:
                return pages
            body = client.call("GET", next_url, what="GET /me/accounts (next page)")
    finally:
        client.close()
