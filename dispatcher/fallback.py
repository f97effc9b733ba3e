"""Fallback channels: a recipient as an ordered chain (telegram, then smtp).

``fallback_chain(user, ["telegram", "smtp"])`` is a recipient for
``schedule_messages``: the first channel the user has an address for gets the
dispatch; the whole chain is kept on it (:class:`~dispatcher.models.FallbackHop`).
When that dispatch FAILS (a blocked bot, an unknown chat, a hard-bounced or
suppressed address, a text the channel cannot carry, attempts exhausted), the
delivery engine calls :func:`follow` in the transaction that writes the
outcome: the next usable hop becomes a new dispatch of the same message,
published on commit. Each hop falls back once: a failed dispatch retried by
hand and failing again does not schedule a second fallback. A dispatch whose
lease expired (its worker died mid-send) is not followed: whether it was sent
is not known, and a fallback would risk a duplicate on another channel.

Hops without an address for the user (no chat id, no phone) are kept in the
chain, marked skipped, and never tried. With no channels given, the user's
own order applies (:func:`set_channel_order`, per message type or for every
type), else ``settings.DISPATCHER_FALLBACK_CHANNELS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from messengers.base import MessengerBase

from .exceptions import InvalidArgument, InvalidRecipient, UnknownMessageType, UnknownMessenger
from .models import ChannelPreference, Dispatch, FallbackHop
from .publish import publish
from .recipients import Recipient, _CheckedRecipient, recipients
from .registry import get_registered_message_type, get_registered_messenger_object


class ChainedRecipient(_CheckedRecipient):
    """The first usable hop of a chain, carrying the whole chain (``.chain``)."""

    chain: list[dict[str, Any]]

    def __repr__(self) -> str:
        hops = " -> ".join(f"{h['messenger']}:{h.get('address') or '-'}" for h in self.chain)
        return f"ChainedRecipient({hops})"


def _hop(alias: str, who: Any) -> dict[str, Any]:
    try:
        [recipient] = recipients(alias, who)
    except (InvalidRecipient, ValueError, LookupError) as exc:
        return {"messenger": alias, "address": None, "skipped": f"no address: {exc}"}
    return {"messenger": alias, "address": recipient.address}


def channel_order(user: Any, message_type: str | None = None) -> list[str] | None:
    """The user's own order of channels for ``message_type`` (or for every type), or None."""
    if user is None or getattr(user, "pk", None) is None:
        return None
    found = {p.message_type: p.channels for p in ChannelPreference.objects.filter(
        user=user, message_type__in=["", message_type or ""])}
    order = found.get(message_type or "") or found.get("")
    return list(order) if order else None


def set_channel_order(user: Any, channels: Sequence[str], message_type: str = "") -> ChannelPreference:
    """Store ``user``'s preferred order of channels, for one message type or (empty) every type."""
    channels = list(channels)
    for alias in channels:
        get_registered_messenger_object(alias)
    if message_type:
        get_registered_message_type(message_type)
    preference, _ = ChannelPreference.objects.update_or_create(
        user=user, message_type=message_type, defaults={"channels": channels})
    return preference


def fallback_chain(
    who: Any, channels: Sequence[str | MessengerBase] | None = None, *, message_type: str | None = None
) -> ChainedRecipient:
    """A recipient that falls back along ``channels`` (messenger aliases, in order).

    ``who`` is a user (each messenger finds its address) or one address for
    every channel. Without ``channels``: the user's order for ``message_type``
    (:func:`set_channel_order`), else ``settings.DISPATCHER_FALLBACK_CHANNELS``.
    With ``message_type``, channels that cannot carry that type are skipped.
    Raises :class:`InvalidRecipient` when no channel has an address.
    """
    if channels is None:
        channels = channel_order(who if isinstance(who, get_user_model()) else None, message_type)
        if channels is None:
            channels = list(settings.DISPATCHER_FALLBACK_CHANNELS)
    aliases = [c.alias if isinstance(c, MessengerBase) else c for c in channels]
    if not aliases:
        raise InvalidArgument("a fallback chain needs at least one channel")
    if len(set(aliases)) != len(aliases):
        raise InvalidArgument(f"a channel appears twice in the chain {aliases}")
    for alias in aliases:
        get_registered_messenger_object(alias)  # UnknownMessenger, before anything else
    chain = [_hop(alias, who) for alias in aliases]
    if message_type is not None:  # a channel that cannot carry the type is no hop for it
        for hop in chain:
            if hop.get("address") is not None and not _supports(message_type, hop["messenger"]):
                hop.update(address=None, skipped=f"message type {message_type!r} cannot go through it")
    first = next((h for h in chain if h.get("address") is not None), None)
    if first is None:
        reasons = "; ".join(f"{h['messenger']}: {h['skipped']}" for h in chain)
        raise InvalidRecipient(f"{who!r} has no address on any channel of the chain ({reasons})")
    user = who if isinstance(who, get_user_model()) else None
    recipient = ChainedRecipient(first["messenger"], first["address"], user)
    recipient.chain = chain
    return recipient


def chains_of(targets: Sequence[Recipient]) -> bool:
    """Whether any target is a chain (so :func:`record_chains` has work)."""
    return any(isinstance(t, ChainedRecipient) for t in targets)


def record_chains(dispatches: Sequence[Dispatch], targets: Sequence[Recipient]) -> None:
    """Keep each chained target's chain on its dispatch (in the scheduling transaction)."""
    hops = []
    for dispatch, target in zip(dispatches, targets, strict=True):
        if isinstance(target, ChainedRecipient):
            position = next(i for i, h in enumerate(target.chain)
                            if h["messenger"] == target.messenger and h.get("address") == target.address)
            hops.append(FallbackHop(dispatch_id=dispatch.pk, chain=target.chain, position=position))
    FallbackHop.objects.bulk_create(hops)


def _supports(message_type: str, alias: str) -> bool:
    try:
        return get_registered_message_type(message_type).supports(get_registered_messenger_object(alias))
    except (UnknownMessageType, UnknownMessenger):
        return False


def follow(failed_ids: Iterable[int], now: datetime) -> list[Dispatch]:
    """Schedule the next hop of each dispatch among ``failed_ids`` that is
    FAILED, has a chain and has not fallen back yet; returns the new dispatches.

    Called by the delivery engine inside the transaction that records the
    failures, so an outcome and its fallback are written together or not at
    all; the new dispatches are published once it commits.
    """
    failed_ids = list(failed_ids)
    if not failed_ids:
        return []
    hops = list(
        FallbackHop.objects.select_for_update(of=("self",))
        .filter(dispatch_id__in=failed_ids, next__isnull=True, dispatch__status=Dispatch.Status.FAILED)
        .select_related("dispatch", "dispatch__message")
    )
    created: list[tuple[FallbackHop, Dispatch, int, list[dict[str, Any]]]] = []
    for hop in hops:
        failed = hop.dispatch
        chain = [dict(h) for h in hop.chain]
        for position in range(hop.position + 1, len(chain)):
            step = chain[position]
            if step.get("address") is None:
                continue
            if not _supports(failed.message.message_type, step["messenger"]):
                step["skipped"] = f"message type {failed.message.message_type!r} cannot go through it"
                continue
            new = Dispatch(message=failed.message, messenger=step["messenger"], address=step["address"],
                           recipient_id=failed.recipient_id, next_attempt_at=now, queued_at=now, created=now)
            created.append((hop, new, position, chain))
            break
    if not created:
        return []
    new_rows = Dispatch.objects.bulk_create([new for _, new, _, _ in created])
    FallbackHop.objects.bulk_create([
        FallbackHop(dispatch_id=new.pk, chain=chain, position=position, previous_id=hop.dispatch_id)
        for hop, new, position, chain in created
    ])
    for hop, new, _, chain in created:
        FallbackHop.objects.filter(pk=hop.pk).update(next=new, fell_back_at=now, chain=chain)
    by_priority: dict[int, list[tuple[str, int]]] = {}
    for hop, new, _, _ in created:
        by_priority.setdefault(hop.dispatch.message.priority, []).append((new.messenger, new.pk))
    for level, pairs in by_priority.items():
        transaction.on_commit(lambda pairs=pairs, level=level: publish(pairs, priority=level))
    return new_rows
