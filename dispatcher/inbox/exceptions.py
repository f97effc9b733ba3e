"""Errors of the private-message API.

They subclass Django's own exceptions so that a view that lets one escape gets
the right status for free (404 for a message that is not there, 403 for a
permission error), and :class:`dispatcher.exceptions.DispatcherError` so one
``except`` catches every error of this project.
"""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied

from dispatcher.exceptions import DispatcherError


class InboxError(DispatcherError):
    """Base class of the private-message errors."""


class MessageNotFound(InboxError, ObjectDoesNotExist, LookupError):
    """No such private message, or none the given user may see.

    directmessages returned an empty string here, which looks like an empty
    message; raising makes the mistake visible.
    """

    def __init__(self, message_id: object):
        super().__init__(f"private message {message_id!r} does not exist")
        self.message_id = message_id


class MessagePermissionDenied(InboxError, PermissionDenied):
    """The user is not allowed to do this to the message (e.g. read-mark it
    without being its recipient)."""


class InvalidMessage(InboxError, ValueError):
    """The message cannot be written as asked (no such party, subject too long...);
    nothing was saved."""


class RecipientRefused(InvalidMessage):
    """The sender may not write to this recipient: the recipient blocked them,
    or the site's exchange filter (``DISPATCHER_INBOX_EXCHANGE_FILTER``) said no.

    ``reason`` is the text to show the sender; ``recipient`` the refused user.
    """

    def __init__(self, recipient: object, reason: str):
        name = recipient.get_username() if hasattr(recipient, "get_username") else str(recipient)
        super().__init__(f"you cannot write to {name}: {reason}")
        self.recipient = recipient
        self.reason = reason
