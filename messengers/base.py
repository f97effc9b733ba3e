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
from typing import Any

from .exceptions import InvalidAddress, MessengerError, PermanentError
from .outcomes import FAILED, SENT, Outcomes
from .redact import register_secret


@dataclass(frozen=True)
class Attachment:
    """A file carried by an e-mail: its name, bytes and MIME type.

    ``disposition`` is ``"attachment"`` or ``"inline"`` (None: no
    Content-Disposition header); ``content_id`` (``"<logo@example.org>"``)
    lets an HTML part show an inline part as ``cid:logo@example.org``.
    """

    filename: str | None
    content: bytes
    mimetype: str = "application/octet-stream"
    disposition: str | None = "attachment"
    content_id: str | None = None


@dataclass
class Rendered:
    """A message rendered for one dispatch (one recipient)."""

    subject: str = ""
    text: str = ""
    html: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    #: Files for messengers that carry them (e-mail); others ignore them.
    attachments: tuple[Attachment, ...] = ()


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


class MessengerBase:
    """Base class of every messenger, built-in or user-defined.

    A messenger knows a protocol and nothing of the database: ``send`` gets
    :class:`Envelope` objects and reports each outcome with ``mark_*`` or by
    raising (see :mod:`messengers.outcomes` for how the two combine).
    """

    #: Registry key, used in ``recipients(alias, ...)`` and queue names.
    alias: str = ""
    #: Shown in the UI (preferences, admin).
    title: str = ""
    #: Whether users may subscribe to message types through this messenger.
    allow_user_subscription: bool = True
    #: What this messenger can carry; message types name what they need
    #: (``EmailHtmlMessage.requires = "email"``), so any alias of an email
    #: messenger (``smtp``, ``smtp_bulk``, ...) takes email message types.
    capabilities: frozenset[str] = frozenset({"text"})
    #: Longest text a single send accepts, as counted by :meth:`text_length`;
    #: longer texts are refused at scheduling, before anything is written.
    max_text_length: int | None = None
    #: Whether a dispatch with an empty text is refused (FAILED) instead of sent.
    requires_text: bool = False
    #: Attributes holding secrets: whatever is assigned to them is masked in
    #: every stored error text and log line (see :mod:`messengers.redact`).
    secret_options: tuple[str, ...] = ()

    _recorder: Outcomes | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.secret_options and value:
            register_secret(value)
        super().__setattr__(name, value)

    def __str__(self) -> str:
        return self.title or self.alias

    # -- addresses and texts -------------------------------------------------------
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

    def text_length(self, text: str) -> int:
        """The length of ``text`` as the provider counts it against ``max_text_length``."""
        return len(text)

    def length_problem(self, text: str) -> str | None:
        """Why ``text`` is too long for this messenger, or None.

        Checked at scheduling (the caller gets a clear error and nothing is
        written) and again per dispatch, for texts rendered per recipient.
        """
        if self.max_text_length is not None:
            length = self.text_length(text)
            if length > self.max_text_length:
                return (f"{self.alias}: the text is {length} characters, "
                        f"over max_text_length={self.max_text_length}")
        return None

    def check_text(self, envelope: Envelope) -> None:
        """Raise :class:`PermanentError` for a text this messenger cannot send."""
        text = envelope.rendered.text or ""
        if self.requires_text and not text.strip():
            raise PermanentError(f"{self.alias}: the message text is empty")
        problem = self.length_problem(text)
        if problem:
            raise PermanentError(problem)

    # -- batch lifecycle ---------------------------------------------------------
    def for_batch(self, recorder: Outcomes) -> MessengerBase:
        """A copy of this messenger that reports outcomes to ``recorder``."""
        clone = copy.copy(self)
        object.__setattr__(clone, "_recorder", recorder)
        return clone

    def before_send(self) -> None:
        """Warm up (connect) before a batch."""

    def after_send(self) -> None:
        """Cool down (disconnect) after a batch; always called, even after errors."""

    def send(self, message_cls: Any, message_model: MessageInfo, dispatch_models: Sequence[Envelope]) -> None:
        """Send the message to each envelope, and mark each one (or raise)."""
        raise NotImplementedError(f"{type(self).__name__} must implement send()")

    # -- outcomes ----------------------------------------------------------------
    def _require_recorder(self) -> Outcomes:
        if self._recorder is None:
            raise RuntimeError(
                "mark_sent()/mark_error()/mark_failed() are called by send() during a batch "
                "run by the delivery engine, not on a registered messenger directly"
            )
        return self._recorder

    def mark_sent(self, dispatch: Envelope, result: Mapping[str, Any] | None = None) -> None:
        """Record a success, with what the provider answered worth keeping (ids)."""
        self._require_recorder().sent(dispatch, result)

    def mark_error(
        self,
        dispatch: Envelope,
        error: BaseException | str,
        message_cls: Any = None,
        *,
        retry_after: float | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a temporary failure: the dispatch is retried later.

        ``message_cls`` is accepted for django-sitemessage's
        ``mark_error(dispatch, error_log, message_cls)`` and not needed here;
        a number in its place is taken as ``retry_after``, as this method
        once took it positionally.
        """
        numeric = isinstance(message_cls, (int, float)) and not isinstance(message_cls, bool)
        if retry_after is None and numeric:
            retry_after = float(message_cls)
        self._require_recorder().error(dispatch, error, retry_after, result)

    def mark_failed(
        self, dispatch: Envelope, error: BaseException | str, message_cls: Any = None,
        *, result: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a permanent failure: the dispatch is not retried."""
        self._require_recorder().failed(dispatch, error, result)

    def mark_exception(
        self, dispatch: Envelope, error: BaseException, *, result: Mapping[str, Any] | None = None
    ) -> None:
        """Mark by the error's class: permanent errors fail, all others are retried."""
        self._require_recorder().exception(dispatch, error, result)

    # -- test messages -----------------------------------------------------------
    def send_test_message(self, to: Any, text: str) -> None:
        """Send ``text`` to ``to`` right now, bypassing the queue and the database.

        Raises the transport's error if the message could not be sent. A
        messenger written for django-sitemessage implements ``_test_message``
        instead of ``send``, and that is what is called.
        """
        self._test_message(to, text)

    def _test_message(self, to: Any, text: str) -> None:
        address = self.validate_address(self.get_address(to))
        envelope = Envelope(id=None, address=address, rendered=Rendered(subject=text[:78], text=text),
                            message=MessageInfo(None, "plain", {"text": text}))
        recorder = Outcomes()
        batch = self.for_batch(recorder)
        raised: BaseException | None = None
        try:
            batch.before_send()
            batch.check_text(envelope)
            batch.send(None, envelope.message, [envelope])
        except Exception as exc:
            raised = exc
        finally:
            batch.after_send()
        recorder.settle([envelope], raised)
        outcome = recorder.get(envelope)
        assert outcome is not None
        if outcome.status == SENT:
            return
        if isinstance(outcome.error, BaseException):
            raise outcome.error
        cls = PermanentError if outcome.status == FAILED else MessengerError
        raise cls(str(outcome.error))
