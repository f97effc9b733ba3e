"""Twilio's message status callbacks.

Give the sms messenger ``status_callback="https://example.org/dispatcher/receipts/twilio/"``
and Twilio posts (form-encoded) each status change of each message:
``MessageSid``, ``MessageStatus`` (``queued``, ``sent``, ``delivered``,
``undelivered``, ``failed``...), ``ErrorCode`` when it failed, ``AccountSid``
and others. Every call is signed: ``X-Twilio-Signature`` is the base64
HMAC-SHA1, keyed with the account's auth token, of the full URL Twilio called
followed by each POST parameter's name and value, sorted by name. The token
is the one of the configured sms messenger whose account the call names; a
call that names no configured account, or whose signature does not match,
records nothing.

The URL Twilio signed is the public one: behind a proxy that Django does not
see through, it is ``SITE_URL`` plus the path, which is tried as well.

``delivered`` is recorded as delivered; ``undelivered`` and ``failed`` as
bounced, permanent (the number is suppressed) for the error codes that mean
the number itself will not receive (unknown or landline number, blocked,
opted out with STOP). Other statuses are acknowledged, not recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from django.utils import timezone

from messengers.sms import TwilioSMSMessenger

from ..models import Dispatch
from ..registry import get_registered_messenger_objects
from .core import BOUNCED, DELIVERED, Receipt, find_by_result

FAILED_STATUSES = frozenset({"undelivered", "failed"})
#: Twilio error codes that mean the number will not receive, whatever is retried:
#: 21610 the recipient replied STOP, 21614 not a mobile number, 30004 message
#: blocked (by the recipient or carrier for this number), 30005 unknown
#: destination handset, 30006 landline or unreachable carrier.
PERMANENT_CODES = frozenset({"21610", "21614", "30004", "30005", "30006"})


class Malformed(ValueError):
    """Not a status callback Twilio sends."""


def signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """Twilio's ``X-Twilio-Signature`` of a form-encoded request to ``url``."""
    data = url + "".join(f"{name}{value}" for name, value in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _with_and_without_port(url: str) -> list[str]:
    """Twilio signs the URL as configured: with its port, or without the
    default one; both are tried, as Twilio's own validators do."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    candidates = [url]
    if parts.port is not None and parts.port == default:
        candidates.append(urlunsplit(parts._replace(netloc=_netloc(parts, host))))
    elif parts.port is None and default is not None:
        candidates.append(urlunsplit(parts._replace(netloc=_netloc(parts, f"{host}:{default}"))))
    return candidates


def _netloc(parts: object, hostport: str) -> str:
    userinfo = getattr(parts, "netloc", "").rpartition("@")
    return f"{userinfo[0]}@{hostport}" if userinfo[1] else hostport


def auth_token_for(account_sid: str) -> str | None:
    for messenger in get_registered_messenger_objects().values():
        if isinstance(messenger, TwilioSMSMessenger) and messenger.account_sid == account_sid:
            return messenger.auth_token
    return None


def verify(urls: Iterable[str], params: list[tuple[str, str]], given: str | None,
           account_sid: str | None) -> bool:
    """Whether ``given`` is Twilio's signature of this call for the account it names."""
    if not given or not account_sid:
        return False
    token = auth_token_for(account_sid)
    if not token:
        return False
    for url in dict.fromkeys(u for base in urls for u in _with_and_without_port(base)):
        if hmac.compare_digest(signature(url, params, token).encode(), given.encode()):
            return True
    return False


def parse(form: Mapping[str, str]) -> tuple[str, Receipt] | None:
    """``(MessageSid, receipt)`` of a status callback; None for a status that
    is not a receipt. Raises :class:`Malformed` for what Twilio does not send."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not status:
        raise Malformed("no MessageSid or MessageStatus")
    payload = dict(form)
    if status == "delivered":
        return sid, Receipt(DELIVERED, timezone.now(), "delivered", False, payload)
    if status in FAILED_STATUSES:
        code = str(form.get("ErrorCode") or "")
        message = form.get("ErrorMessage") or ""
        reason = " ".join(p for p in (status, f"error {code}" if code else "", message) if p)
        return sid, Receipt(BOUNCED, timezone.now(), reason, code in PERMANENT_CODES, payload)
    return None


def aliases() -> list[str]:
    messengers = get_registered_messenger_objects().items()
    return [alias for alias, m in messengers if isinstance(m, TwilioSMSMessenger)]


def find(sid: str) -> Dispatch | None:
    return find_by_result("sid", sid, aliases())
