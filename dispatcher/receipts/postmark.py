"""Postmark's Delivery, Bounce and SpamComplaint webhooks.

Postmark posts one JSON object per event, with ``RecordType`` and the
``MessageID`` its API answered when the mail was accepted (kept in
``Dispatch.result["message_id"]`` by the postmark messenger). Webhooks are
authenticated as Postmark offers: HTTP basic auth credentials in the webhook
URL (``https://user:password@example.org/dispatcher/receipts/postmark/``),
or a secret in the path (``.../receipts/postmark/<token>/``), configured in
``DISPATCHER_POSTMARK_WEBHOOK = {"username": ..., "password": ..., "token": ...}``.

Bounce types: a bounce Postmark marks ``Inactive`` (it deactivated the
address), or of a type that means the address is wrong (HardBounce,
BadEmailAddress, ManuallyDeactivated), is permanent: the address is
suppressed. Soft bounces (SoftBounce, Transient, DnsError...) are recorded,
not suppressed. Notices that are not about delivery (AutoResponder,
Subscribe, AddressChange...) and other record types (Open, Click...) are
acknowledged and not recorded.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from django.conf import settings

from messengers.postmark import PostmarkMessenger

from ..models import Dispatch
from ..registry import get_registered_messenger_objects
from .core import BOUNCED, COMPLAINED, DELIVERED, Receipt, find_by_result, parse_time

#: Bounce types recorded as bounces; the rest are not about delivery.
BOUNCE_TYPES = frozenset({
    "HardBounce", "SoftBounce", "Transient", "DnsError", "BadEmailAddress", "ManuallyDeactivated",
    "Blocked", "SpamNotification", "SMTPApiError", "DMARCPolicy", "Unknown",
})
#: Bounce types that mean the address itself will not work.
HARD_TYPES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
#: Payload keys not kept on the receipt: the raw bounce dump can be large.
DROPPED = frozenset({"Content"})


class Malformed(ValueError):
    """Not a payload Postmark sends."""


def _config() -> dict[str, str]:
    return dict(settings.DISPATCHER_POSTMARK_WEBHOOK or {})


def authorized(authorization: str | None, token: str | None) -> bool:
    """Whether a call carries the configured basic-auth credentials or path token."""
    config = _config()
    if token is not None:
        expected = config.get("token")
        return bool(expected) and hmac.compare_digest(token.encode(), str(expected).encode())
    username, password = config.get("username"), config.get("password")
    if not username or not password or not authorization:
        return False
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{username}:{password}".encode())


def parse(payload: Any) -> tuple[str, Receipt] | None:
    """``(MessageID, receipt)`` of a webhook payload; None for an event that is
    not about delivery. Raises :class:`Malformed` for what Postmark does not send."""
    if not isinstance(payload, dict):
        raise Malformed("the body is not a JSON object")
    record_type = payload.get("RecordType")
    message_id = payload.get("MessageID")
    if not isinstance(record_type, str):
        raise Malformed("no RecordType")
    kept = {k: v for k, v in payload.items() if k not in DROPPED}
    if record_type not in ("Delivery", "Bounce", "SpamComplaint"):
        return None
    if not isinstance(message_id, str) or not message_id:
        raise Malformed("no MessageID")
    if record_type == "Delivery":
        if not isinstance(payload.get("DeliveredAt"), str):
            raise Malformed("a Delivery without DeliveredAt")
        return message_id, Receipt(DELIVERED, parse_time(payload["DeliveredAt"]),
                                   str(payload.get("Details") or ""), False, kept)
    if not isinstance(payload.get("BouncedAt"), str):
        raise Malformed(f"a {record_type} without BouncedAt")
    when = parse_time(payload["BouncedAt"])
    if record_type == "SpamComplaint":
        return message_id, Receipt(COMPLAINED, when, "spam complaint", True, kept)
    kind = payload.get("Type")
    if not isinstance(kind, str):
        raise Malformed("a Bounce without Type")
    if kind not in BOUNCE_TYPES:
        return None
    reason = " - ".join(str(p) for p in (kind, payload.get("Description"), payload.get("Details")) if p)
    permanent = payload.get("Inactive") is True or kind in HARD_TYPES
    return message_id, Receipt(BOUNCED, when, reason, permanent, kept)


def aliases() -> list[str]:
    """The configured messengers that send through Postmark."""
    messengers = get_registered_messenger_objects().items()
    return [alias for alias, m in messengers if isinstance(m, PostmarkMessenger)]


def find(message_id: str) -> Dispatch | None:
    return find_by_result("message_id", message_id, aliases())
