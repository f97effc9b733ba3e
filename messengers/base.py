"""The messenger contract.

A messenger is registered once, under its ``alias``. For each batch the
delivery engine works on a shallow copy of the registered object
(:meth:`MessengerBase.for_batch`), so connections and outcomes kept on
``self`` during a batch are never shared between concurrent batches.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .exceptions import InvalidAddress, MessengerError, PermanentError


@dataclass
class Rendered:
    """A message rendered for one dispatch (one recipient)."""

    subject: str = ""
    text: str = ""
    html: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageInfo:
    """What a messenger may know of the message a batch sends: never the ORM row."""

    id: int | None
    message_type: str
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pk(self) -> int | None:
        return self.id


@dataclass(frozen=True)
class Envelope:
    """One dispatch as a messenger sees it.

    The delivery engine builds one per claimed dispatch; a messenger reads it
    and reports its outcome with ``mark_*`` (or by raising), so no messenger
    ever touches the database. ``state`` is what an earlier attempt stored as
    its result (for example the parts of a split text already sent), so an
    attempt can resume instead of repeating itself.
    """

    id: int | None
    address: str
    rendered: Rendered
    attempt: int = 1
    message: MessageInfo = field(default_factory=lambda: MessageInfo(None, ""))
    state: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pk(self) -> int | None:
        return self.id

    @property
    def message_id(self) -> int | None:
        return self.message.id

    @property
    def context(self) -> Mapping[str, Any]:
        return self.message.context

    @property
    def message_cache(self) -> str:
        """The rendered text, under django-sitemessage's name for it."""
        return self.rendered.text


class OutcomeRecorder(Protocol):
    def sent(self, dispatch: Any) -> None: ...

    def error(self, dispatch: Any, error: BaseException | str, retry_after: float | None) -> None: ...

    def failed(self, dispatch: Any, error: BaseException | str) -> None: ...


class MemoryRecorder:
    """Keeps outcomes in memory; used for test messages, which write nothing."""

    def __init__(self) -> None:
        self.outcomes: dict[int, tuple[str, BaseException | str | None, float | None]] = {}

    def sent(self, dispatch: Any) -> None:
        self.outcomes[id(dispatch)] = ("sent", None, None)

    def error(self, dispatch: Any, error: BaseException | str, retry_after: float | None) -> None:
        self.outcomes.setdefault(id(dispatch), ("error", error, retry_after))

    def failed(self, dispatch: Any, error: BaseException | str) -> None:
        self.outcomes.setdefault(id(dispatch), ("failed", error, None))


class MessengerBase:
    """Base class of every messenger, built-in or user-defined."""

    #: Registry key, used in ``recipients(alias, ...)`` and queue names.
    alias: str = ""
    #: Shown in the UI (preferences, admin).
    title: str = ""
    #: Whether users may subscribe to message types through this messenger.
    allow_user_subscription: bool = True
    #: Longest text a single send accepts; longer texts are refused up front.
    max_text_length: int | None = None

    _recorder: OutcomeRecorder | None = None

    def __str__(self) -> str:
        return self.title or self.alias

    # -- addresses ---------------------------------------------------------------
    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        """Turn a recipient (a user object or a raw address) into an address."""
        return recipient

    def validate_address(self, address: Any) -> str:
        """Return the address as stored, or raise :class:`InvalidAddress`."""
        if isinstance(address, bool) or not isinstance(address, (str, int)):
            raise InvalidAddress(
                f"{self.alias}: an address must be a string or an integer, "
                f"not {type(address).__name__}"
            )
        return str(address).strip()

    # -- batch lifecycle ---------------------------------------------------------
    def for_batch(self, recorder: OutcomeRecorder) -> MessengerBase:
        """A copy of this messenger that reports outcomes to ``recorder``."""
        clone = copy.copy(self)
        clone._recorder = recorder
        return clone

    def before_send(self) -> None:
        """Warm up (connect) before a batch."""

    def after_send(self) -> None:
        """Cool down (disconnect) after a batch; always called, even after errors."""

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Sequence[Any]) -> None:
        """Send ``message_model`` to each dispatch, and mark each one."""
        raise NotImplementedError(f"{type(self).__name__} must implement send()")

    # -- outcomes ----------------------------------------------------------------
    def _require_recorder(self) -> OutcomeRecorder:
        if self._recorder is None:
            raise RuntimeError(
                "mark_sent()/mark_error()/mark_failed() are called by send() during a batch "
                "run by the delivery engine, not on a registered messenger directly"
            )
        return self._recorder

    def mark_sent(self, dispatch: Any) -> None:
        self._require_recorder().sent(dispatch)

    def mark_error(
        self, dispatch: Any, error: BaseException | str, retry_after: float | None = None
    ) -> None:
        """Record a temporary failure: the dispatch is retried later."""
        if retry_after is None and isinstance(error, MessengerError):
            retry_after = error.retry_after
        self._require_recorder().error(dispatch, error, retry_after)

    def mark_failed(self, dispatch: Any, error: BaseException | str) -> None:
        """Record a permanent failure: the dispatch is not retried."""
        self._require_recorder().failed(dispatch, error)

    def mark_exception(self, dispatch: Any, error: BaseException) -> None:
        """Mark by the error's class: permanent errors fail, all others are retried."""
        if isinstance(error, PermanentError):
            self.mark_failed(dispatch, error)
        else:
            self.mark_error(dispatch, error)

    # -- helpers -----------------------------------------------------------------
    def send_test_message(self, to: Any, text: str) -> None:
        """Send ``text`` to ``to`` right now, bypassing the queue and the database.

        Raises the transport's error if the message could not be sent.
        """
        from dispatcher.messages import PlainTextMessage
        from dispatcher.models import Dispatch, Message

        address = self.validate_address(self.get_address(to))
        message = Message(message_type=PlainTextMessage.alias, context={"text": text})
        dispatch = Dispatch(message=message, messenger=self.alias, address=address)
        dispatch.rendered = Rendered(subject=text[:78], text=text)
        recorder = MemoryRecorder()
        batch = self.for_batch(recorder)
        try:
            batch.before_send()
            batch.send(PlainTextMessage, message, [dispatch])
        finally:
            batch.after_send()
        status, error, _ = recorder.outcomes.get(id(dispatch), ("error", "not marked", None))
        if status == "sent":
            return
        if isinstance(error, BaseException):
            raise error
        cls = PermanentError if status == "failed" else MessengerError
        raise cls(str(error))

