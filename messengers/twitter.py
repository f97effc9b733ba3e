"""X (Twitter), through the X API v2 with OAuth 1.0a user context.

``TwitterMessenger(api_key, api_secret, access_token, access_token_secret)``.
The address ``''`` posts a tweet; ``'idlesign'`` posts a tweet addressed to
@idlesign, or, with ``direct_messages=True``, sends @idlesign a direct message.
"""

from __future__ import annotations

import re
import time
from typing import Any

import requests
from requests_oauthlib import OAuth1

from .base import Envelope
from .exceptions import InvalidAddress, MessengerError, PermanentError, RateLimited
from .http import HTTPMessenger
from .redact import redact

TWEET_LENGTH = 280
DM_LENGTH = 10_000


def _detail(body: Any) -> str:
    """The human text of an X API v2 error body (problem+json or ``errors``)."""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append(str(error.get("detail") or error.get("message") or ""))
    return redact("; ".join(p for p in parts if p))


class TwitterMessenger(HTTPMessenger):
    """Posts to X as the account whose access token is given.

    Texts over 280 characters are refused at scheduling, unless
    ``truncate=True`` cuts them (ending with an ellipsis). Length is counted
    in characters; X weighs some (CJK, emoji) double, and such a text may be
    refused by X.
    """

    alias = "twitter"
    title = "X (Twitter)"
    api_base = "https://api.x.com"
    #: ours, then django-sitemessage's
    address_attribute = ("twitter_username", "twitter")
    requires_text = True
    max_text_length: int | None = TWEET_LENGTH
    secret_options = ("api_key", "api_secret", "access_token", "access_token_secret")

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        access_token: str,
        access_token_secret: str,
        *,
        direct_messages: bool = False,
        truncate: bool = False,
        **http_options: Any,
    ) -> None:
        super().__init__(**http_options)
        self.api_key, self.api_secret = api_key, api_secret
        self.access_token, self.access_token_secret = access_token, access_token_secret
        self.auth = OAuth1(api_key, api_secret, access_token, access_token_secret)
        self.direct_messages = direct_messages
        self.truncate = truncate
        self.limit = DM_LENGTH if direct_messages else TWEET_LENGTH
        self.max_text_length = None if truncate else self.limit

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address).removeprefix("@")
        if address and not re.fullmatch(r"[A-Za-z0-9_]{1,15}", address):
            raise InvalidAddress(f"twitter: {address!r} is not an X username")
        return address

    def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> requests.Response:
        return super().request(method, path, what=what, auth=self.auth, **kwargs)

    def error_for(self, response: requests.Response, body: Any, what: str) -> MessengerError | None:
        detail = _detail(body)
        if response.status_code == 429:
            reset = response.headers.get("x-rate-limit-reset", "")
            retry_after = max(1.0, float(reset) - time.time()) if reset.isdigit() else None
            return RateLimited(f"twitter {what}: HTTP 429 rate limited: {detail}", retry_after=retry_after)
        if response.status_code == 403 and "duplicate" in detail.lower():
            return PermanentError(f"twitter {what}: X refuses a text it was sent recently: {detail}")
        error = self.http_error(response, what, detail)
        if error is None and not (isinstance(body, dict) and isinstance(body.get("data"), dict)):
            # v2 answers 200 with only "errors" when, say, a user does not exist.
            return PermanentError(f"twitter {what}: {detail or 'no data in the answer'}")
        return error

    def fit(self, text: str, limit: int) -> str:
        if len(text) <= limit:
            return text
        if self.truncate:
            return text[: limit - 1].rstrip() + "…"
        raise PermanentError(
            f"twitter: the text is {len(text)} characters, X accepts at most {limit} "
            "(shorten it, or configure the messenger with truncate=True)"
        )

    def send_envelope(self, envelope: Envelope) -> dict[str, Any] | None:
        text = (envelope.rendered.text or "").strip()
        username = envelope.address
        if username and self.direct_messages:
            return self.send_direct_message(username, self.fit(text, DM_LENGTH))
        if username:
            text = f"@{username} {text}"  # a reply mention counts against the limit too
        tweet = {"text": self.fit(text, TWEET_LENGTH)}
        body = self.call("POST", "2/tweets", what="POST /2/tweets", json=tweet)
        return {"tweet_id": body["data"].get("id")}

    def send_direct_message(self, username: str, text: str) -> dict[str, Any]:
        user = self.call("GET", f"2/users/by/username/{username}", what=f"user lookup of @{username}")
        participant = user["data"]["id"]
        body = self.call(
            "POST", f"2/dm_conversations/with/{participant}/messages",
            what=f"direct message to @{username}", json={"text": text},
        )
        return {"dm_event_id": body["data"].get("dm_event_id"), "participant_id": participant}
