"""Recording a receipt on its dispatch, once, and what a receipt implies."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import CharField, ExpressionWrapper
from django.db.models.fields.json import KeyTextTransform
from django.dispatch import Signal
from django.utils import timezone

from ..models import DeliveryReceipt, Dispatch, Suppression
from ..suppression import suppress

logger = logging.getLogger("dispatcher.receipts")

DELIVERED = DeliveryReceipt.Event.DELIVERED
BOUNCED = DeliveryReceipt.Event.BOUNCED
COMPLAINED = DeliveryReceipt.Event.COMPLAINED

#: Sent after a receipt is committed, with ``dispatch`` and ``receipt``.
receipt_recorded = Signal()


@dataclass(frozen=True)
class Receipt:
    """What a provider reported, before it is matched to a dispatch."""

    event: str
    occurred_at: datetime
    reason: str = ""
    #: A hard bounce (the address will not work again) or a complaint.
    permanent: bool = False
    payload: Mapping[str, Any] = field(default_factory=dict)


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time as providers write it (any number of fraction digits,
    ``Z``); now when it is missing or unreadable."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return timezone.now()
        return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.utc)
    return timezone.now()


def find_by_result(key: str, value: str, aliases: Iterable[str]) -> Dispatch | None:
    """The dispatch of ``aliases`` whose ``result[key]`` is ``value`` (by the
    functional index on that key)."""
    aliases = list(aliases)
    if not value or not aliases:
        return None
    # The same expression as the index's; compared as text (not as JSON, as a
    # key lookup would on SQLite).
    provider_id = ExpressionWrapper(KeyTextTransform(key, "result"), output_field=CharField())
    return (
        Dispatch.objects.annotate(provider_id=provider_id)
        .filter(result__isnull=False, provider_id=value, messenger__in=aliases)
        .order_by("-id").first()
    )


def record(dispatch: Dispatch, receipt: Receipt, provider: str) -> bool:
    """Record ``receipt`` on ``dispatch``; False if that event was already recorded.

    A permanent bounce or a complaint puts the address on the suppression
    list of the dispatch's messenger kind, in the same transaction.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                row = DeliveryReceipt.objects.create(
                    dispatch=dispatch, event=receipt.event, provider=provider,
                    occurred_at=receipt.occurred_at, reason=receipt.reason[:4000],
                    permanent=receipt.permanent, payload=dict(receipt.payload),
                )
        except IntegrityError:
            logger.info("dispatch %s: %s already recorded", dispatch.pk, receipt.event)
            return False
        if receipt.permanent and receipt.event in (BOUNCED, COMPLAINED):
            reason = Suppression.Reason.BOUNCE
            if receipt.event == COMPLAINED:
                reason = Suppression.Reason.COMPLAINT
            suppress(dispatch.messenger, dispatch.address, reason,
                     detail=f"{provider}: {receipt.reason}".strip(": "), dispatch=dispatch)
        transaction.on_commit(lambda: _signal(dispatch, row))
    logger.info("dispatch %s %s (%s): %s", dispatch.pk, receipt.event, provider, receipt.reason,
                extra={"dispatch_id": dispatch.pk, "messenger": dispatch.messenger, "outcome": receipt.event})
    return True


def _signal(dispatch: Dispatch, row: DeliveryReceipt) -> None:
    responses = receipt_recorded.send_robust(sender=Dispatch, dispatch=dispatch, receipt=row)
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error("receiver %r of receipt_recorded failed: %r", receiver, response)
