"""Errors raised by the public API: always before anything is written."""

from messengers.exceptions import InvalidAddress


class DispatcherError(Exception):
    """Base class of the API's errors."""


class UnknownMessenger(DispatcherError, LookupError):
    def __init__(self, alias: object):
        super().__init__(f"unknown messenger {alias!r}: register it first")
        self.alias = alias


class UnknownMessageType(DispatcherError, LookupError):
    def __init__(self, alias: object):
        super().__init__(f"unknown message type {alias!r}: register it first")
        self.alias = alias


class InvalidRecipient(DispatcherError, ValueError):
    """A recipient that cannot be turned into an address."""


class MessageTooLong(DispatcherError, ValueError):
    """A text longer than a messenger's ``max_text_length``."""


class NoRecipients(DispatcherError, ValueError):
    """``schedule_messages`` was given no one to send to."""


class InvalidArgument(DispatcherError, ValueError):
    """An argument that cannot be stored as given.

    Checked in Python before the transaction, so every database refuses the
    same things: SQLite would store a too-long key that PostgreSQL rejects.
    """


class NotAMessage(InvalidArgument, TypeError):
    """Something given as a message that is neither a string nor a MessageBase."""


class InvalidContext(InvalidArgument):
    """A message context that cannot be stored as JSON (or holds NUL characters
    or lone surrogates, which PostgreSQL refuses)."""


class InvalidPriority(InvalidArgument):
    """A priority that is not a whole number in the column's range."""


class InvalidSendAt(InvalidArgument):
    """A ``send_at`` that is not a timezone-aware datetime."""


class InvalidIdempotencyKey(InvalidArgument):
    """An idempotency key that is not a string, or longer than its column."""


class InvalidSender(InvalidArgument, TypeError):
    """A sender that is not a saved user."""


class DatabaseUnavailable(DispatcherError, ConnectionError):
    """The database could not be reached; nothing was sent, and the task retries."""


class BrokerUnavailable(DispatcherError, ConnectionError):
    """Deliver tasks could not be published; the rows wait for the next sweep."""

    def __init__(self, text: str, published: int = 0):
        super().__init__(text)
        #: Tasks published before the broker failed.
        self.published = published


__all__ = [
    "BrokerUnavailable",
    "DatabaseUnavailable",
    "DispatcherError",
    "InvalidAddress",
    "InvalidArgument",
    "InvalidContext",
    "InvalidIdempotencyKey",
    "InvalidPriority",
    "InvalidRecipient",
    "InvalidSendAt",
    "InvalidSender",
    "MessageTooLong",
    "NoRecipients",
    "NotAMessage",
    "UnknownMessageType",
    "UnknownMessenger",
]
