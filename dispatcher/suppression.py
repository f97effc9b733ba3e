"""The suppression list: addresses no dispatch goes to.

A hard bounce or a complaint reported by a provider (:mod:`dispatcher.receipts`)
puts the address on the list, as can a one-click unsubscribe from a message
type that asks for it (``suppress_on_unsubscribe = True``, for marketing) and
an operator (the admin, or :func:`suppress`). The delivery engine asks before
each batch: a dispatch to a suppressed address is FAILED at once, with a
``Suppressed`` error whose text starts with "suppressed", and never reaches
its messenger (so a fallback channel, if the recipient has one, is tried).

Entries are per messenger *kind*: every messenger that can carry e-mail
(smtp, postmark, however they are configured) is the kind ``"email"``, so an
address that bounced through Postmark is not mailed through SMTP either; any
other messenger is a kind of its own, named by its class's alias (``"sms"``,
``"telegram"``). E-mail addresses are compared without case.

Removing an entry (:func:`unsuppress`, or deleting it in the admin) lets the
address receive again, e.g. once the user fixed their mailbox.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.dispatch import receiver

from messengers.base import MessengerBase
from messengers.exceptions import PermanentError

from .exceptions import UnknownMessenger
from .models import Dispatch, Message, Suppression
from .registry import get_registered_messenger_object
from .signals import unsubscribed

EMAIL = "email"


class Suppressed(PermanentError):
    """The dispatch's address is on the suppression list: not sent."""


def kind_of(messenger: str | MessengerBase) -> str:
    """The suppression kind of a messenger (an alias or object), or of a kind given as such.

    ``"email"`` for every messenger that carries e-mail; otherwise the
    alias its class is known by (so ``sms`` and ``sms_backup``, both Twilio,
    share one list). A string that is no registered alias is taken as a kind.
    """
    if isinstance(messenger, str):
        try:
            messenger = get_registered_messenger_object(messenger)
        except UnknownMessenger:
            return str(messenger)
    if EMAIL in messenger.capabilities:
        return EMAIL
    return str(type(messenger).alias or messenger.alias)


def normalize(kind: str, address: str) -> str:
    address = str(address).strip()
    return address.lower() if kind == EMAIL else address


def suppress(
    messenger: str | MessengerBase,
    address: str,
    reason: str = Suppression.Reason.MANUAL,
    *,
    message_type: str = "",
    detail: str = "",
    dispatch: Dispatch | None = None,
) -> Suppression:
    """Put ``address`` on the suppression list of ``messenger``'s kind (or of
    the kind named); for one ``message_type`` only, or (empty) every type.

    Suppressing an address twice keeps the first entry (and its reason).
    """
    kind = kind_of(messenger)
    lookup = {"kind": kind, "address": normalize(kind, address), "message_type": message_type or ""}
    defaults = {"reason": reason, "detail": detail[:2000], "dispatch": dispatch}
    try:
        with transaction.atomic():
            entry, _ = Suppression.objects.get_or_create(**lookup, defaults=defaults)
    except IntegrityError:  # written by someone else between the get and the create
        entry = Suppression.objects.get(**lookup)
    return entry


def unsuppress(messenger: str | MessengerBase, address: str, message_type: str | None = None) -> int:
    """Take ``address`` off the list (every entry of the kind, or the one for
    ``message_type``; ``""`` is the every-type entry). Returns how many went."""
    kind = kind_of(messenger)
    entries = Suppression.objects.filter(kind=kind, address=normalize(kind, address))
    if message_type is not None:
        entries = entries.filter(message_type=message_type)
    return entries.delete()[0]


def is_suppressed(messenger: str | MessengerBase, address: str, message_type: str | None = None) -> bool:
    """Whether a dispatch of ``message_type`` (None: of any type) to ``address`` would be refused."""
    kind = kind_of(messenger)
    entries = Suppression.objects.filter(kind=kind, address=normalize(kind, address))
    if message_type is not None:
        entries = entries.filter(message_type__in=["", message_type])
    return entries.exists()


def suppressed(rows: Iterable[Dispatch], messages: Mapping[int, Message]) -> dict[int, Suppressed]:
    """Which of a batch's dispatches go to a suppressed address: ``{id: error}``.

    One query (by the list's unique index) for the whole batch.
    """
    rows = list(rows)
    if not rows:
        return {}
    kinds = {alias: kind_of(alias) for alias in {d.messenger for d in rows}}
    keys = {(kinds[d.messenger], normalize(kinds[d.messenger], d.address)) for d in rows}
    found: dict[tuple[str, str], dict[str, Suppression]] = {}
    for entry in Suppression.objects.filter(
        kind__in=set(kinds.values()), address__in={address for _, address in keys}
    ).only("kind", "address", "message_type", "reason", "created"):
        found.setdefault((entry.kind, entry.address), {})[entry.message_type] = entry
    if not found:
        return {}
    refused: dict[int, Suppressed] = {}
    for dispatch in rows:
        kind = kinds[dispatch.messenger]
        entries = found.get((kind, normalize(kind, dispatch.address)))
        if not entries:
            continue
        message = messages.get(dispatch.message_id)
        entry = entries.get("") or (entries.get(message.message_type) if message is not None else None)
        if entry is not None:
            scope = f" for {entry.message_type!r}" if entry.message_type else ""
            refused[dispatch.pk] = Suppressed(
                f"suppressed: {dispatch.address} is on the {kind} suppression list{scope} "
                f"({entry.reason}, since {entry.created:%Y-%m-%d %H:%M} UTC); not sent"
            )
    return refused


def fail_suppressed(recorder: Any, rows: list[Dispatch], refused: Mapping[int, Suppressed]) -> list[Dispatch]:
    """Record the refused rows as FAILED through the batch's recorder; the others, to send."""
    if not refused:
        return rows
    for dispatch in rows:
        if dispatch.pk in refused:
            recorder.failed(dispatch, refused[dispatch.pk])
    return [d for d in rows if d.pk not in refused]


@receiver(unsubscribed, dispatch_uid="dispatcher.suppression.unsubscribed")
def suppress_on_unsubscribe(sender: Any, dispatch: Dispatch | None = None, **kwargs: Any) -> None:
    """An unsubscribe link of a type with ``suppress_on_unsubscribe = True``
    (marketing) also suppresses the address for that type: mailing lists
    that are not subscriptions (``recipients(...)`` given by the site) stop too."""
    if dispatch is None or not getattr(sender, "suppress_on_unsubscribe", False):
        return
    suppress(dispatch.messenger, dispatch.address, Suppression.Reason.UNSUBSCRIBE,
             message_type=getattr(sender, "alias", ""), detail="unsubscribe link", dispatch=dispatch)
