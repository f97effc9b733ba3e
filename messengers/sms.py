"""SMS through Twilio's Messages REST API.

``TwilioSMSMessenger('AC...', auth_token, from_number='+15005550006')`` (or
``messaging_service_sid='MG...'``). Addresses are E.164 numbers (``+4915112345678``);
spaces, dashes, dots and parentheses are dropped before the check.
"""

from __future__ import annotations

import re
from typing import Any

from .exceptions import InvalidAddress, MessengerConfigurationError, PermanentError
from .http import HTTPMessenger, RateLimited, json_body, retry_after_header
from .redact import redact, register_secret

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
        register_secret(auth_token)
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

    def send_dispatch(self, message_cls: Any, message_model: Any, dispatch: Any) -> None:
        text = (dispatch.rendered.text or "").strip()
        if not text:
            raise PermanentError("sms: the message text is empty")
        if len(text) > MAX_BODY:
            raise PermanentError(f"sms: the text is {len(text)} characters, Twilio takes at most {MAX_BODY}")
        data = {"To": dispatch.address, "Body": text}
        if self.messaging_service_sid:
            data["MessagingServiceSid"] = self.messaging_service_sid
        if self.from_number:
            data["From"] = self.from_number
        if self.status_callback:
            data["StatusCallback"] = self.status_callback
        what = f"message to {dispatch.address}"
        response = self.request(
            "POST", f"2010-04-01/Accounts/{self.account_sid}/Messages.json",
            what=what, data=data, auth=(self.account_sid, self.auth_token),
        )
        body = json_body(response)
        body = body if isinstance(body, dict) else {}
        code = body.get("code")
        detail = redact(f"error {code}: {body.get('message', '')}") if code else ""
        if response.status_code < 300:
            return
        if code in TEMPORARY_CODES:
            raise RateLimited(f"sms {what}: {detail}", retry_after=retry_after_header(response))
        error = self.http_error(response, what, detail)
        if error:
            if response.status_code == 401:
                raise PermanentError(f"sms {what}: {detail or 'HTTP 401'} (account SID or token rejected)")
            raise error
