"""SMTP bounces: delivery status notifications (RFC 3464) mailed to a dispatch's bounce address.

With ``bounce_address="bounces+{id}@example.org"`` on the smtp messenger,
each mail leaves with its own envelope sender, so a bounce, however late,
comes back to the address of its dispatch. Have that mailbox delivered to a
Maildir and set ``DISPATCHER_BOUNCE_MAILBOX`` to its path: beat runs
:func:`process_mailbox` (task ``dispatcher.process_bounces``); or pipe each
mail into ``manage.py dispatcher_bounces -`` from the MTA (Postfix's
``pipe``, procmail...).

A bounce is recorded only when it is a real DSN (``multipart/report;
report-type=delivery-status``), comes to a bounce address of a configured
smtp messenger, and names the dispatch's own address as its recipient: a
forged or unrelated mail records nothing. ``Action: failed`` with a 5.x.x
status is a hard bounce (the address is suppressed); a 4.x.x failure is
recorded, not suppressed; ``delayed`` is not a bounce and is ignored;
``delivered`` (a success notice, when asked for) is recorded as delivered.
"""

from __future__ import annotations

import logging
import mailbox
from email import message_from_bytes, policy
from email.message import Message as EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from ..models import Dispatch
from ..registry import get_registered_messenger_objects
from . import core
from .core import BOUNCED, DELIVERED, Receipt

logger = logging.getLogger("dispatcher.receipts")

#: Headers that may carry the address a bounce was delivered to, best first.
RECIPIENT_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "To")


def _bounce_messengers() -> list[tuple[str, Any]]:
    return [
        (alias, m) for alias, m in get_registered_messenger_objects().items()
        if callable(getattr(m, "bounce_dispatch_id", None)) and getattr(m, "bounce", None) is not None
    ]


def _dispatch_for(addresses: list[str]) -> Dispatch | None:
    for address in addresses:
        for alias, messenger in _bounce_messengers():
            pk = messenger.bounce_dispatch_id(address)
            if pk is not None:
                return Dispatch.objects.filter(pk=pk, messenger=alias).first()
    return None


def _report(mail: EmailMessage) -> list[EmailMessage]:
    """The per-recipient field groups of the delivery-status part."""
    if mail.get_content_type() != "multipart/report":
        return []
    if str(mail.get_param("report-type") or "").lower() != "delivery-status":
        return []
    for part in mail.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            groups = part.get_payload()
            if isinstance(groups, list) and len(groups) > 1:
                # the first group is about the whole message
                return [g for g in groups[1:] if isinstance(g, EmailMessage)]
    return []


def _address_of(field: str | None) -> str:
    """``rfc822; user@example.org`` -> ``user@example.org``."""
    if not field:
        return ""
    value = field.partition(";")[2] if ";" in field else field
    return value.strip().strip("<>").strip().lower()


def parse(raw: bytes, recipient: str | None = None) -> tuple[Dispatch, Receipt] | None:
    """The dispatch a bounce mail is about and what it says; None when it is
    not a DSN for one of our dispatches (nothing is recorded for it)."""
    mail = message_from_bytes(raw, policy=policy.compat32)
    addresses = [recipient] if recipient else []
    for header in RECIPIENT_HEADERS:
        addresses += [addr for _, addr in getaddresses(mail.get_all(header, []))]
    dispatch = _dispatch_for([a for a in addresses if a])
    if dispatch is None:
        return None
    for group in _report(mail):
        final = _address_of(group.get("Final-Recipient"))
        original = _address_of(group.get("Original-Recipient"))
        if dispatch.address.lower() not in (final, original):
            continue
        action = (group.get("Action") or "").strip().lower()
        status = (group.get("Status") or "").strip()
        diagnostic = " ".join((group.get("Diagnostic-Code") or "").split())
        when = timezone.now()
        if group.get("Last-Attempt-Date") or mail.get("Date"):
            try:
                when = parsedate_to_datetime(str(group.get("Last-Attempt-Date") or mail.get("Date")))
            except (TypeError, ValueError):
                pass
        payload = {"action": action, "status": status, "diagnostic": diagnostic[:1000],
                   "final_recipient": final, "original_recipient": original,
                   "reporting_mta": str(mail.get("From") or "")[:200]}
        if action == "failed":
            reason = " ".join(p for p in (status, diagnostic) if p) or "failed"
            return dispatch, Receipt(BOUNCED, when, reason, status.startswith("5."), payload)
        if action == "delivered":
            return dispatch, Receipt(DELIVERED, when, status or "delivered", False, payload)
        return None  # delayed, relayed, expanded: not a receipt
    return None


def process_message(raw: bytes, recipient: str | None = None) -> bool:
    """Record one bounce mail; whether it recorded something."""
    found = parse(raw, recipient)
    if found is None:
        return False
    dispatch, receipt = found
    return core.record(dispatch, receipt, "dsn")


def process_mailbox(path: str | Path) -> int:
    """Read the new mails of the Maildir at ``path``, record their bounces,
    and file each one as seen (in ``cur``, flag S), recorded or not.
    Returns how many receipts were recorded."""
    box = mailbox.Maildir(str(path), factory=None, create=False)
    recorded = 0
    for key in list(box.iterkeys()):
        try:
            message = box[key]
        except KeyError:  # taken by another run meanwhile
            continue
        if message.get_subdir() != "new":
            continue
        try:
            recorded += process_message(message.as_bytes())
        except Exception:
            logger.exception("a bounce mail could not be processed; it is filed as seen")
        message.set_subdir("cur")
        message.add_flag("S")
        try:
            box[key] = message
        except KeyError:
            pass
    return recorded
