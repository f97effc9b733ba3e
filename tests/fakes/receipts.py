"""Delivery receipts as the providers document them, to post to our endpoints.

The payloads are the examples of the providers' own documentation, with the
message id (and address) of the test's dispatch put in:

- Postmark: Delivery, Bounce and SpamComplaint webhooks
  (postmarkapp.com/developer/webhooks/delivery-webhook, .../bounce-webhook,
  .../spam-complaint-webhook; the same shapes as postmark.js'
  ``DeliveryWebhook``, ``BounceWebhook``, ``SpamComplaintWebhook``);
- Twilio: a message status callback (form-encoded; twilio.com/docs/messaging/
  guides/track-outbound-message-status) and its ``X-Twilio-Signature``
  (twilio.com/docs/usage/webhooks/webhooks-security), computed here
  independently of the code under test, as Twilio's helper libraries do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

POSTMARK_DELIVERY: dict[str, Any] = {
    "RecordType": "Delivery",
    "MessageStream": "outbound",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Recipient": "john@example.com",
    "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
    "Details": "Test delivery webhook details",
    "Tag": "welcome-email",
    "ServerID": 23,
    "Metadata": {"a_key": "a_value", "b_key": "b_value"},
}

POSTMARK_BOUNCE: dict[str, Any] = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Test",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {"a_key": "a_value", "b_key": "b_value"},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    "Details": "Test bounce details",
    "Email": "john@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Test subject",
    "Content": "<Full dump of bounce>",
}

POSTMARK_SOFT_BOUNCE: dict[str, Any] = {
    **POSTMARK_BOUNCE,
    "Type": "SoftBounce", "TypeCode": 4096, "Name": "Soft bounce",
    "Description": "Unable to temporarily deliver this email.",
    "Details": "mailbox full", "Inactive": False,
}

POSTMARK_SPAM_COMPLAINT: dict[str, Any] = {
    "RecordType": "SpamComplaint",
    "MessageStream": "outbound",
    "ID": 42,
    "Type": "SpamComplaint",
    "TypeCode": 512,
    "Name": "Spam complaint",
    "Tag": "Test",
    "MessageID": "00000000-0000-0000-0000-000000000000",
    "ServerID": 1234,
    "Email": "john@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "Subject": "Test subject",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": False,
    "Metadata": {"a_key": "a_value", "b_key": "b_value"},
}

POSTMARK_OPEN: dict[str, Any] = {
    "RecordType": "Open", "MessageStream": "outbound", "FirstOpen": True, "Client": {},
    "OS": {}, "Platform": "WebMail", "UserAgent": "Mozilla/5.0", "ReadSeconds": 5,
    "Geo": {}, "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {},
    "ReceivedAt": "2019-11-05T16:33:54.9070259Z", "Tag": "welcome-email", "Recipient": "john@example.com",
}


def postmark(template: dict[str, Any], message_id: str, address: str) -> dict[str, Any]:
    payload = dict(template, MessageID=message_id)
    payload["Recipient" if "Recipient" in payload else "Email"] = address
    return payload


def twilio_status(sid: str, status: str, to: str, account_sid: str,
                  error_code: str | None = None) -> dict[str, str]:
    """A status callback's parameters, as Twilio posts them."""
    form = {
        "SmsSid": sid, "SmsStatus": status, "MessageStatus": status, "To": to, "MessageSid": sid,
        "AccountSid": account_sid, "From": "+15005550006", "ApiVersion": "2010-04-01",
    }
    if error_code:
        form["ErrorCode"] = error_code
    if status == "delivered":
        form["RawDlrDoneDate"] = "2309031212"
    return form


def twilio_signature(url: str, form: dict[str, str], auth_token: str) -> str:
    """Twilio's algorithm: the URL, then each parameter's name and value sorted
    by name, HMAC-SHA1 with the auth token, base64."""
    data = url
    for name in sorted(form):
        data += name + form[name]
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()
