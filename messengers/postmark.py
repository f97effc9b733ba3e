"""E-mail through Postmark's API (``POST /email``).

``PostmarkMessenger(server_token, 'noreply@example.org')``. Addresses are
e-mail addresses; users give ``user.email``, as with the smtp messenger.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from .exceptions import InvalidAddress, PermanentError, TemporaryError
from .http import HTTPMessenger, json_body
from .redact import redact, register_secret

INACTIVE_RECIPIENT = 406
#: Postmark ErrorCodes that clear up by themselves (100: maintenance).
TEMPORARY_CODES = {100}


class PostmarkMessenger(HTTPMessenger):
    """Sends each dispatch as one e-mail through a Postmark server (message stream)."""

    alias = "postmark"
    title = "E-mail (Postmark)"
    api_base = "https://api.postmarkapp.com"
    address_attribute = "email"

    def __init__(
        self,
        server_token: str,
        from_email: str,
        *,
        message_stream: str = "outbound",
        track_opens: bool | None = None,
        **http_options: Any,
    ) -> None:
        super().__init__(**http_options)
        register_secret(server_token)
        self.server_token = server_token
        self.from_email = from_email
        self.message_stream = message_stream
        self.track_opens = track_opens

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        _, addr = parseaddr(address)
        local, _, domain = addr.rpartition("@")
        if not local or not domain or " " in addr or addr != address:
            raise InvalidAddress(f"postmark: {address!r} is not an e-mail address")
        return address

    def build(self, dispatch: Any) -> dict[str, Any]:
        rendered = dispatch.rendered
        payload: dict[str, Any] = {
            "From": self.from_email,
            "To": dispatch.address,
            "Subject": rendered.subject,
            "TextBody": rendered.text or "",
            "MessageStream": self.message_stream,
        }
        if rendered.html:
            payload["HtmlBody"] = rendered.html
        if rendered.headers:
            payload["Headers"] = [{"Name": k, "Value": v} for k, v in rendered.headers.items()]
        if self.track_opens is not None:
            payload["TrackOpens"] = self.track_opens
        if getattr(dispatch, "pk", None):
            payload["Metadata"] = {"dispatch_id": str(dispatch.pk)}
        return payload

    def send_dispatch(self, message_cls: Any, message_model: Any, dispatch: Any) -> None:
        what = f"e-mail to {dispatch.address}"
        response = self.request(
            "POST", "email", what=what, json=self.build(dispatch),
            headers={"Accept": "application/json", "X-Postmark-Server-Token": self.server_token},
        )
        body = json_body(response)
        body = body if isinstance(body, dict) else {}
        code = body.get("ErrorCode")
        detail = redact(f"ErrorCode {code}: {body.get('Message', '')}") if code is not None else ""
        if response.status_code == 200 and code == 0:
            return
        if response.status_code == 401:
            raise PermanentError(f"postmark {what}: {detail or 'HTTP 401'} (the server token was rejected)")
        if response.status_code == 422:
            if code == INACTIVE_RECIPIENT:
                raise PermanentError(
                    f"postmark {what}: {detail} (the address bounced or complained before: "
                    "reactivate it in Postmark's suppressions to send again)"
                )
            if code in TEMPORARY_CODES:
                raise TemporaryError(f"postmark {what}: {detail}")
            raise PermanentError(f"postmark {what}: {detail or 'HTTP 422'}")
        error = self.http_error(response, what, detail)
        if error:
            raise error
        raise TemporaryError(f"postmark {what}: HTTP {response.status_code}, unexpected answer {detail}")
