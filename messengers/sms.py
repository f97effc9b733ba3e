"""SMS through Twilio's Messages REST API.

``TwilioSMSMessenger('AC...', auth_token, from_number='+15005550006')`` (or
``messaging_service_sid='MG...'``). Addresses are E.164 numbers (``+4915112345678``);
spaces, dashes, dots and parentheses are dropped before the check.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Envelope
from .exceptions import (
    InvalidAddress,
    MessengerConfigurationError,
    MessengerError,
    PermanentError,
    RateLimited,
)
from .http import Call, HTTPMessenger, retry_after_header
from .redact import redact

E164 = re.compile(r"\+[1-9]\d{1,14}")
MAX_BODY = 1600
#: Twilio error codes that clear up by themselves: queue full, rate limits.
TEMPORARY_CODES = {14107, 20429, 21611, 30001}


def normalize_phone(value: str) -> str:
    return re.sub(r"[\s\-.()]", "", value)


class TwilioSMSMessenger(HTTPMessenger):
    """Sends SMS through Twilio; Twilio's acceptance (status ``queued``) counts as sent."""

    alias = "sms"
    title = "SMS"
    api_base = "https://api.twilio.com"
    address_attribute = "phone"
    requires_text = True
    max_text_length = MAX_BODY
    secret_options = ("auth_token",)

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        *,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        **http_options: Any,
    ) -> None:
        super().__init__(**http_options)
        if not from_number and not messaging_service_sid:
            raise MessengerConfigurationError("sms: give from_number or messaging_service_sid")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback

    def validate_address(self, address: Any) -> str:
        address = normalize_phone(super().validate_address(address))
        if not E164.fullmatch(address):
            raise InvalidAddress(f"sms: {address!r} is not an E.164 phone number (like +4915112345678)")
        return address

    def build_request(self, envelope: Envelope) -> Call:
        data = {"To": envelope.address, "Body": (envelope.rendered.text or "").strip()}
        if self.messaging_service_sid:
            data["MessagingServiceSid"] = self.messaging_service_sid
        if self.from_number:
            data["From"] = self.from_number
        if self.status_callback:
            data["StatusCallback"] = self.status_callback
        auth = (self.account_sid, self.auth_token)
        return Call("POST", f"2010-04-01/Accounts/{self.account_sid}/Messages.json",
                    f"message to {envelope.address}", {"data": data, "auth": auth})

    def error_for(self, response: Any, body: Any, what: str) -> MessengerError | None:
        if response.status_code < 300:
            return None
        body = body if isinstance(body, dict) else {}
        code = body.get("code")
        detail = redact(f"error {code}: {body.get('message', '')}") if code else ""
        if code in TEMPORARY_CODES:
            return RateLimited(f"sms {what}: {detail}", retry_after=retry_after_header(response))
        if response.status_code == 401:
            return PermanentError(f"sms {what}: {detail or 'HTTP 401'} (account SID or token rejected)")
        return self.http_error(response, what, detail)

    def read_result(self, body: Any) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            return None
        return {"sid": body.get("sid"), "status": body.get("status")}
