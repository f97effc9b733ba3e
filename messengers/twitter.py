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

from .exceptions import InvalidAddress, MessengerError, PermanentError
from .http import HTTPMessenger, RateLimited, json_body
from .redact import redact, register_secret

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

    Texts over 280 characters fail with the reason, unless ``truncate=True``
    cuts them (ending with an ellipsis). Length is counted in characters; X
    weighs some (CJK, emoji) double, and such a text may be refused by X.
    """

    alias = "twitter"
    title = "X (Twitter)"
    api_base = "https://api.x.com"
    address_attribute = "twitter_username"

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
        register_secret(api_key, api_secret, access_token, access_token_secret)
        self.auth = OAuth1(api_key, api_secret, access_token, access_token_secret)
        self.direct_messages = direct_messages
        self.truncate = truncate

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address).removeprefix("@")
        if address and not re.fullmatch(r"[A-Za-z0-9_]{1,15}", address):
            raise InvalidAddress(f"twitter: {address!r} is not an X username")
        return address

    def api(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = self.request(method, path, what=what, auth=self.auth, **kwargs)
        body = json_body(response)
        error = self.api_error(response, body, what)
        if error:
            raise error
        return body

    def api_error(self, response: requests.Response, body: Any, what: str) -> MessengerError | None:
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

    def send_dispatch(self, message_cls: Any, message_model: Any, dispatch: Any) -> None:
        text = (dispatch.rendered.text or "").strip()
        if not text:
            raise PermanentError("twitter: the message text is empty")
        username = dispatch.address
        if username and self.direct_messages:
            self.send_direct_message(username, self.fit(text, DM_LENGTH))
            return
        if username:
            text = f"@{username} {text}"
        self.api("POST", "2/tweets", "POST /2/tweets", json={"text": self.fit(text, TWEET_LENGTH)})

    def send_direct_message(self, username: str, text: str) -> None:
        user = self.api("GET", f"2/users/by/username/{username}", f"user lookup of @{username}")
        participant = user["data"]["id"]
        self.api(
            "POST", f"2/dm_conversations/with/{participant}/messages",
            f"direct message to @{username}", json={"text": text},
        )
