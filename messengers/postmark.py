"""E-mail through Postmark's API (``POST /email``).

``PostmarkMessenger(server_token, 'noreply@example.org')``. Addresses are
e-mail addresses; users give ``user.email``, as with the smtp messenger.
"""

from __future__ import annotations

import base64
from email.utils import parseaddr
from typing import Any

from .base import Attachment, Envelope
from .exceptions import InvalidAddress, MessengerError, PermanentError, TemporaryError
from .http import Call, HTTPMessenger
from .redact import redact

#: Headers Postmark takes as fields of the request.
PAYLOAD_FIELDS = {"from": "From", "reply-to": "ReplyTo"}
#: Headers Postmark writes itself. To and Cc are not shown: a Postmark
#: request delivers to every address in its To and Cc, and a dispatch is
#: one recipient. Bcc is never shown.
DROPPED_HEADERS = frozenset({"to", "cc", "bcc", "date", "subject"})

INACTIVE_RECIPIENT = 406
#: Postmark ErrorCodes that clear up by themselves (100: maintenance).
TEMPORARY_CODES = {100}


class PostmarkMessenger(HTTPMessenger):
    """Sends each dispatch as one e-mail through a Postmark server (message stream)."""

    alias = "postmark"
    title = "E-mail (Postmark)"
    api_base = "https://api.postmarkapp.com"
    address_attribute = "email"
    capabilities = frozenset({"text", "email"})
    secret_options = ("server_token",)

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
        headers = []
        for name, value in rendered.headers.items():
            lower = name.lower()
            if lower in PAYLOAD_FIELDS:
                payload[PAYLOAD_FIELDS[lower]] = value
            elif lower not in DROPPED_HEADERS:
                headers.append({"Name": name, "Value": value})
        if headers:
            payload["Headers"] = headers
        attachments = getattr(rendered, "attachments", ())
        if attachments:
            payload["Attachments"] = [self.attachment(a) for a in attachments]
        if self.track_opens is not None:
            payload["TrackOpens"] = self.track_opens
        if getattr(dispatch, "pk", None):
            payload["Metadata"] = {"dispatch_id": str(dispatch.pk)}
        return payload

    @staticmethod
    def attachment(attachment: Attachment) -> dict[str, Any]:
        """An attachment as Postmark takes it (base64 content; inline parts by ContentID)."""
        item = {
            "Name": attachment.filename or "attachment",
            "Content": base64.b64encode(attachment.content).decode("ascii"),
            "ContentType": attachment.mimetype or "application/octet-stream",
        }
        if attachment.content_id:
            item["ContentID"] = "cid:" + attachment.content_id.strip().strip("<>")
        return item

    def build_request(self, envelope: Envelope) -> Call:
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self.server_token}
        return Call("POST", "email", f"e-mail to {envelope.address}",
                    {"json": self.build(envelope), "headers": headers})

    def error_for(self, response: Any, body: Any, what: str) -> MessengerError | None:
        body = body if isinstance(body, dict) else {}
        code = body.get("ErrorCode")
        detail = redact(f"ErrorCode {code}: {body.get('Message', '')}") if code is not None else ""
        if response.status_code == 200 and code == 0:
            return None
        if response.status_code == 401:
            return PermanentError(f"postmark {what}: {detail or 'HTTP 401'} (the server token was rejected)")
        if response.status_code == 422:
            if code == INACTIVE_RECIPIENT:
                return PermanentError(
                    f"postmark {what}: {detail} (the address bounced or complained before: "
                    "reactivate it in Postmark's suppressions to send again)"
                )
            if code in TEMPORARY_CODES:
                return TemporaryError(f"postmark {what}: {detail}")
            return PermanentError(f"postmark {what}: {detail or 'HTTP 422'}")
        return self.http_error(response, what, detail) or TemporaryError(
            f"postmark {what}: HTTP {response.status_code}, unexpected answer {detail}"
        )

    def read_result(self, body: Any) -> dict[str, Any] | None:
        return {"message_id": body.get("MessageID")} if isinstance(body, dict) else None
