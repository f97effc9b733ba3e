"""The ``inapp`` messenger: delivers a notification into the user's own feed.

Any message type can target it like any other channel
(``recipients("inapp", user)``, or a user's subscription through it on the
preferences page). It lives in the feed app, not in ``messengers/``, because
it writes rows: the contract is :class:`messengers.base.MessengerBase`, and
a messenger may live in any app, as a site's own do. The engine never
imports it; the feed app registers it in its ``ready()``.

The address is the user's id. Each call to :meth:`send` writes the rows of
its envelopes with one bulk insert, then marks them sent; a retry after a
crash finds its rows by dispatch id and adds none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.utils.text import Truncator

from messengers.base import Envelope, MessageInfo, MessengerBase
from messengers.exceptions import InvalidAddress

from .models import SUBJECT_MAX_LENGTH, URL_MAX_LENGTH, Notification

_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
#: What a URL in an href never needs: controls, spaces, quotes, angle brackets, backslashes.
_UNSAFE = re.compile(r"[\x00-\x20\x7f\"'<>\\]")


def safe_url(value: Any) -> str:
    """A link a feed item may carry: http(s) or a path on this site, else ""."""
    if not isinstance(value, str) or len(value) > URL_MAX_LENGTH or _UNSAFE.search(value):
        return ""
    if value.startswith(("https://", "http://")):
        return value
    if value.startswith("/") and not value.startswith("//"):
        return value
    return ""


class InAppMessenger(MessengerBase):
    alias = "inapp"
    title = "On the site"
    allow_user_subscription = True
    capabilities = frozenset({"text", "inapp"})

    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        """A user's id; a raw address (an id) is taken as it is."""
        pk = getattr(recipient, "pk", None)
        return str(pk) if pk is not None else recipient

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if not _USER_ID.fullmatch(address) or int(address) > 2**63 - 1:
            raise InvalidAddress(f"inapp: the address is a user id, not {address!r}")
        return address

    def send(self, message_cls: Any, message_model: MessageInfo, dispatch_models: Sequence[Envelope]) -> None:
        envelopes = list(dispatch_models)
        wanted = {int(e.address) for e in envelopes}
        users = get_user_model()._default_manager.filter(pk__in=wanted, is_active=True)
        active = set(users.values_list("pk", flat=True))
        rows, delivered = [], []
        url = safe_url(message_model.context.get("url"))
        for envelope in envelopes:
            user_id = int(envelope.address)
            if user_id not in active:
                self.mark_failed(envelope, f"inapp: no active user with id {user_id}")
                continue
            rows.append(Notification(
                recipient_id=user_id,
                dispatch_id=envelope.id,
                message_type=message_model.message_type[:100],
                subject=Truncator(envelope.rendered.subject or "").chars(SUBJECT_MAX_LENGTH),
                text=envelope.rendered.text or "",
                url=url,
            ))
            delivered.append(envelope)
        Notification.objects.bulk_create(rows, ignore_conflicts=True)
        for envelope in delivered:
            self.mark_sent(envelope)
