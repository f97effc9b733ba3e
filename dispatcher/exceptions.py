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


__all__ = [
    "DispatcherError",
    "InvalidAddress",
    "InvalidRecipient",
    "MessageTooLong",
    "NoRecipients",
    "UnknownMessageType",
    "UnknownMessenger",
]
