"""Who a message goes to: ``Recipient`` tuples, built and checked by
:func:`recipients`, and :func:`recipient_stream` for audiences too large to
hold in memory (a queryset of a million users, a generator of addresses)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import models

from messengers.base import MessengerBase

from .exceptions import InvalidRecipient
from .registry import get_registered_messenger_object
from .validation import check_address


class Recipient(NamedTuple):
    """One address for one messenger, and the user it belongs to, if any."""

    messenger: str
    address: str
    user: Any = None


class _CheckedRecipient(Recipient):
    """A recipient made by :func:`recipients`, which validated it, so
    ``schedule_messages`` need not check a large fan-out twice. A changed copy
    is a plain :class:`Recipient` again, checked like a hand-built one."""

    __slots__ = ()

    def _replace(self, **changes: Any) -> Recipient:  # type: ignore[override]
        return Recipient(*self)._replace(**changes)

    def __repr__(self) -> str:
        return repr(Recipient(*self))


def _is_single(value: Any) -> bool:
    return isinstance(value, (str, int, models.Model)) or not isinstance(value, Iterable)


def recipients(messenger: str | MessengerBase, addresses: Any) -> list[Recipient]:
    """Recipients for ``messenger``: one address or user, or a list of them.

    Users are turned into addresses by the messenger's ``get_address``.
    Raises :class:`UnknownMessenger`, :class:`InvalidRecipient` or
    :class:`InvalidAddress` with the reason.
    """
    # A messenger object must be registered too: workers find it by alias.
    alias = messenger.alias if isinstance(messenger, MessengerBase) else messenger
    messenger_obj = get_registered_messenger_object(alias)
    items = [addresses] if _is_single(addresses) else list(addresses)
    user_model = get_user_model()
    result: list[Recipient] = []
    for item in items:
        user = item if isinstance(item, user_model) else None
        address = messenger_obj.get_address(item)
        if user is not None and address in (None, ""):
            raise InvalidRecipient(f"user {user} has no address for messenger {alias!r}")
        if address is None:
            raise InvalidRecipient(f"{item!r} has no address for messenger {alias!r}")
        if user is not None and user.pk is None:
            raise InvalidRecipient(f"user {user} is not saved")
        result.append(_CheckedRecipient(alias, check_address(messenger_obj, address), user))
    return result


@dataclass
class RecipientStream:
    """A lazy audience for one messenger: read, checked and written in chunks
    by ``schedule_messages``, never held in memory as a whole."""

    messenger: str
    source: Any
    #: Skip (and count) users without an address and invalid addresses,
    #: instead of refusing the whole fan-out.
    skip_invalid: bool = False
    chunk_size: int = 20_000

    def chunks(self) -> Iterator[tuple[list[Recipient], int]]:
        """``(checked recipients, skipped count)`` per chunk of the source."""
        source = self.source
        items: Iterable[Any] = (
            source.iterator(chunk_size=2000) if isinstance(source, models.QuerySet) else source
        )
        chunk: list[Any] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= self.chunk_size:
                yield self._check(chunk)
                chunk = []
        if chunk:
            yield self._check(chunk)

    def _check(self, items: list[Any]) -> tuple[list[Recipient], int]:
        if not self.skip_invalid:
            return recipients(self.messenger, items), 0
        checked: list[Recipient] = []
        skipped = 0
        for item in items:
            try:
                checked.extend(recipients(self.messenger, item))
            except (InvalidRecipient, ValueError):
                skipped += 1
        return checked, skipped


def recipient_stream(
    messenger: str | MessengerBase, source: Any, *, skip_invalid: bool = False, chunk_size: int = 20_000
) -> RecipientStream:
    """An audience of any size for ``schedule_messages``: a queryset (read with
    a server-side cursor) or any iterable of users or addresses.

    ``schedule_messages(message, recipient_stream("smtp", User.objects.all()))``
    writes the dispatches in chunks, in one transaction, and returns a
    :class:`~dispatcher.fanout.FanOut` summary instead of a million objects.
    """
    alias = messenger.alias if isinstance(messenger, MessengerBase) else messenger
    get_registered_messenger_object(alias)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    return RecipientStream(alias, source, skip_invalid, chunk_size)
