"""VK, through the API method ``wall.post``.

``VKontakteMessenger(access_token)``. An address is a wall owner id: a
community wall is negative (``'-12345'``), a user's wall positive; ``''``
posts to the configured ``owner_id``. ``VKontakteMessenger(token, proxy)``
as django-sitemessage takes it works too.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Envelope
from .exceptions import InvalidAddress, MessengerError, PermanentError, RateLimited, TemporaryError
from .http import Call, HTTPMessenger
from .proxy import ProxySpec, take_positional_proxy
from .redact import redact

API_VERSION = "5.199"

#: error code -> seconds to wait (None: the engine's backoff)
TEMPORARY_CODES: dict[int, float | None] = {
    1: None,      # unknown error, try later
    6: 1.0,       # too many requests per second
    9: 3600.0,    # flood control: too many similar posts
    10: None,     # internal server error
    29: 3600.0,   # rate limit reached (daily quota of the method)
}
PERMANENT_CODES = {5, 15, 100, 214, 219, 222}
CAPTCHA = 14


class VKontakteMessenger(HTTPMessenger):
    """Posts to a VK wall with a user or community access token."""

    alias = "vk"
    title = "VK"
    api_base = "https://api.vk.ru/method/"
    #: ours, then django-sitemessage's
    address_attribute = ("vk_owner_id", "vkontakte")
    requires_text = True
    secret_options = ("access_token",)

    def __init__(
        self,
        access_token: str,
        owner_id: int | str | ProxySpec = None,
        *,
        from_group: bool | None = None,
        api_version: str = API_VERSION,
        **http_options: Any,
    ) -> None:
        # django-sitemessage's VKontakteMessenger(token, proxy): a proxy in the
        # owner id's place (a dict, a callable, a URL) is the proxy.
        if take_positional_proxy("vk", owner_id, http_options):
            owner_id = None
        super().__init__(**http_options)
        self.access_token = access_token
        self.owner_id = str(owner_id) if owner_id not in (None, "") else ""
        self.from_group = from_group
        self.api_version = api_version

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if address and not re.fullmatch(r"-?\d+", address):
            raise InvalidAddress(f"vk: {address!r} is not a wall owner id (negative for a community)")
        if not address and not self.owner_id:
            raise InvalidAddress("vk: no owner id given, and the messenger has no owner_id configured")
        return address

    def method(self, name: str, params: dict[str, Any], what: str) -> Call:
        """A call of an API method (the token in the body, never in the URL)."""
        data = {**params, "v": self.api_version, "access_token": self.access_token}
        return Call("POST", name, what, {"data": data})

    def error_for(self, response: Any, body: Any, what: str) -> MessengerError | None:
        # VK reports errors as HTTP 200 with an ``error`` object.
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return self.api_error(body["error"], what)
        failure = self.http_error(response, what)
        if failure is None and (not isinstance(body, dict) or "response" not in body):
            return TemporaryError(f"vk {what}: HTTP {response.status_code} without a response")
        return failure

    def read_result(self, body: Any) -> dict[str, Any] | None:
        response = body.get("response")
        return {"post_id": response.get("post_id")} if isinstance(response, dict) else None

    def api_error(self, error: dict[str, Any], what: str) -> MessengerError:
        code = error.get("error_code")
        text = redact(f"vk {what}: error {code}: {error.get('error_msg', '')}")
        if code == CAPTCHA:
            return PermanentError(
                text + ". VK wants a captcha solved for this token, which a dispatcher cannot do: "
                "post less often, or use a community (group) token, which VK does not challenge; "
                "then use 'Retry now' on the failed dispatches in the admin"
            )
        if code in TEMPORARY_CODES:
            delay = TEMPORARY_CODES[code]
            return RateLimited(text, retry_after=delay) if delay else TemporaryError(text)
        if code in PERMANENT_CODES:
            return PermanentError(text)
        return PermanentError(text + " (not a code VK documents as temporary)")

    def build_request(self, envelope: Envelope) -> Call:
        text = (envelope.rendered.text or "").strip()
        owner_id = envelope.address or self.owner_id
        if not owner_id:
            raise PermanentError("vk: no wall owner id (address empty and no owner_id configured)")
        from_group = self.from_group if self.from_group is not None else owner_id.startswith("-")
        params = {"owner_id": owner_id, "from_group": int(from_group), "message": text}
        return self.method("wall.post", params, f"wall.post to {owner_id}")
