"""Test a site's notifications without a broker or a worker.

In the spirit of ``django.core.mail.outbox``: while notifications are
captured, every registered messenger is replaced by an
:class:`InMemoryMessenger` under the same alias (same address rules, same
text limits, same capabilities), deliveries run in the test's own process
through the real engine (claim, render, record: the Dispatch rows end SENT),
and what would have been sent is appended to :data:`outbox` as
:class:`SentNotification` objects.

- pytest: the ``notifications`` fixture (``dispatcher.pytest_plugin``, loaded
  by pytest wherever the package is installed);
- unittest / Django ``TestCase``: :class:`NotificationsTestMixin`
  (``self.notifications``);
- anywhere: ``with capture_notifications() as sent: ...``;
- real messengers, in process: ``with deliver_inline(): ...``.

Deliveries start when the transaction that scheduled them commits, as in
production. A test running inside a transaction that never commits (pytest's
``db``, Django's ``TestCase``) gets them when it reads the outbox or calls
``deliver()``, and when a ``with`` block ends: what the commit would have run
(the ``on_commit`` callbacks registered since capturing began) runs then,
like ``TestCase.captureOnCommitCallbacks(execute=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

from messengers.base import Envelope, MessageInfo, MessengerBase
from messengers.exceptions import InvalidAddress

from . import publish as publishing
from . import registry
from .delivery import deliver_batch

__all__ = [
    "InMemoryMessenger",
    "Notifications",
    "NotificationsTestMixin",
    "SentNotification",
    "capture_notifications",
    "deliver_inline",
    "outbox",
]

logger = logging.getLogger("dispatcher.testing")


@dataclass(frozen=True)
class SentNotification:
    """One dispatch as an in-memory messenger was given it to send."""

    messenger: str
    address: str
    subject: str
    text: str
    html: str
    message_type: str
    headers: Mapping[str, str]
    context: Mapping[str, Any]
    dispatch_id: int | None
    message_id: int | None
    attempt: int

    @classmethod
    def from_envelope(cls, alias: str, envelope: Envelope) -> SentNotification:
        rendered = envelope.rendered
        return cls(
            messenger=alias, address=envelope.address, subject=rendered.subject, text=rendered.text,
            html=rendered.html, message_type=envelope.message.message_type, headers=dict(rendered.headers),
            context=dict(envelope.context), dispatch_id=envelope.id, message_id=envelope.message_id,
            attempt=envelope.attempt,
        )


#: Everything in-memory messengers were given to send, oldest first. Emptied
#: when a capture starts (the list object stays the same, so it may be imported).
outbox: list[SentNotification] = []


class InMemoryMessenger(MessengerBase):
    """A messenger that keeps what it is given to send in a list and sends nothing.

    With ``like=`` (a configured messenger) it takes that messenger's address
    rules (``get_address``, ``validate_address``), text limits and
    capabilities, so scheduling fails in a test exactly where it would fail
    for real. It lives in one process: a Celery worker's outbox is not the test's.
    """

    alias = "memory"
    title = "In memory (tests)"
    capabilities = frozenset({"text", "email"})

    def __init__(self, alias: str | None = None, like: MessengerBase | None = None,
                 into: list[SentNotification] | None = None) -> None:
        self.like = like
        if like is not None:
            self.title = like.title
            self.capabilities = like.capabilities
            self.max_text_length = like.max_text_length
            self.requires_text = like.requires_text
            self.allow_user_subscription = like.allow_user_subscription
        self.alias = alias or (like.alias if like is not None else type(self).alias)
        self.outbox = outbox if into is None else into

    def __repr__(self) -> str:
        return f"<InMemoryMessenger {self.alias!r}{' like ' + type(self.like).__name__ if self.like else ''}>"

    def get_address(self, recipient: Any) -> Any:  # type: ignore[override]  # an instance's rules
        if self.like is not None:
            return self.like.get_address(recipient)
        return super().get_address(recipient)

    def validate_address(self, address: Any) -> str:
        if self.like is not None:
            return self.like.validate_address(address)
        return super().validate_address(address)

    def text_length(self, text: str) -> int:
        if self.like is not None:
            return self.like.text_length(text)
        return super().text_length(text)

    def send(self, message_cls: Any, message_model: MessageInfo, dispatch_models: Any) -> None:
        for envelope in dispatch_models:
            self.outbox.append(SentNotification.from_envelope(self.alias, envelope))
            self.mark_sent(envelope)


def _deliver(alias: str, ids: list[int]) -> None:
    deliver_batch(alias, ids)


class deliver_inline:  # noqa: N801 - a context manager, named and used like a function
    """Deliver what is published in this process, through the registered
    messengers (real ones, unless replaced), instead of through the broker.

    ``with deliver_inline(): ...``; or ``start()`` and ``stop()``. Each batch
    goes through ``deliver_batch``: claimed, rendered, sent, recorded.
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using
        self._mark: int | None = None
        self._previous: Any = None

    def start(self) -> deliver_inline:
        self._previous = publishing.local_delivery
        publishing.local_delivery = _deliver
        self._mark = len(connections[self.using].run_on_commit)
        return self

    def run_pending(self) -> None:
        """Run what the enclosing transaction would run when it commits: the
        ``on_commit`` callbacks registered since :meth:`start` (and those they
        register). Outside a transaction they ran already, at once."""
        if self._mark is None:
            raise RuntimeError("deliver_inline was not started")
        connection = connections[self.using]
        start = min(self._mark, len(connection.run_on_commit))
        while len(connection.run_on_commit) > start:
            callbacks = connection.run_on_commit[start:]
            del connection.run_on_commit[start:]
            for _savepoints, callback, robust in callbacks:
                if not robust:
                    callback()
                    continue
                try:
                    callback()
                except Exception:
                    logger.exception("a robust on_commit callback failed: %r", callback)

    def stop(self, run_pending: bool = True) -> None:
        try:
            if run_pending:
                self.run_pending()
        finally:
            publishing.local_delivery = self._previous
            self._mark = None

    def __enter__(self) -> deliver_inline:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(run_pending=exc_type is None)


class Notifications:
    """A capture: in-memory messengers in place of the registered ones, and
    inline delivery. Reading it (``outbox``, ``sent()``, ``len()``,
    iteration) first delivers what waits for the test's transaction."""

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self._inline = deliver_inline(using)
        self._saved: dict[str, MessengerBase] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Notifications:
        outbox.clear()
        self._saved = registry.get_registered_messenger_objects()
        for alias, messenger in self._saved.items():
            if not isinstance(messenger, InMemoryMessenger):
                registry.register_messenger_objects(InMemoryMessenger(alias, like=messenger))
        self._inline.start()
        return self

    def stop(self, deliver: bool = False) -> None:
        """End the capture: the configured messengers are back, and publishing
        goes to the broker again. ``deliver=True`` first delivers what waits."""
        try:
            self._inline.stop(run_pending=deliver)
        finally:
            if self._saved is not None:
                # Exactly as before: messengers registered meanwhile go too.
                registry._messengers.clear()
                registry._messengers.update(self._saved)
                self._saved = None

    def __enter__(self) -> Notifications:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop(deliver=exc_type is None)

    # -- reading -----------------------------------------------------------------------
    def deliver(self) -> None:
        """Deliver now what waits for the test's transaction to commit."""
        self._inline.run_pending()

    @property
    def outbox(self) -> list[SentNotification]:
        if self._saved is not None:
            self.deliver()
        return outbox

    def sent(self, messenger: str | None = None, *, to: Any = None,
             message_type: str | None = None) -> list[SentNotification]:
        """What was sent, optionally only through ``messenger``, to ``to`` (an
        address, or a user: each messenger's ``get_address`` turns it into
        one), of ``message_type``."""
        found = []
        for item in self.outbox:
            if messenger is not None and item.messenger != messenger:
                continue
            if message_type is not None and item.message_type != message_type:
                continue
            if to is not None and item.address != _address(item.messenger, to):
                continue
            found.append(item)
        return found

    def clear(self) -> None:
        outbox.clear()

    def __len__(self) -> int:
        return len(self.outbox)

    def __iter__(self) -> Iterator[SentNotification]:
        return iter(list(self.outbox))

    def __getitem__(self, index: int) -> SentNotification:
        return self.outbox[index]

    def __repr__(self) -> str:
        return f"<Notifications: {len(outbox)} sent>"


def _address(alias: str, to: Any) -> str | None:
    if isinstance(to, str):
        return to.strip()
    try:
        messenger = registry.get_registered_messenger_object(alias)
        return messenger.validate_address(messenger.get_address(to))
    except (LookupError, InvalidAddress, AttributeError):
        return None


def capture_notifications(using: str = DEFAULT_DB_ALIAS) -> Notifications:
    """``with capture_notifications() as sent: ...``: in-memory messengers and
    inline delivery inside the block; what waits is delivered when it ends."""
    return Notifications(using)


class NotificationsTestMixin:
    """For ``unittest.TestCase`` and Django's test cases: ``self.notifications``
    captures for the whole test (call ``super().setUp()`` in your ``setUp``)."""

    notifications: Notifications

    def setUp(self):  # noqa: N802 - unittest's name
        super().setUp()  # type: ignore[misc]
        self.notifications = Notifications().start()
        self.addCleanup(self.notifications.stop)  # type: ignore[attr-defined]
