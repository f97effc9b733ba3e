"""The errors a transport raises, and how the delivery engine treats them.

``TemporaryError`` means "try again later" (optionally not before
``retry_after`` seconds); ``PermanentError`` means "this will never work", and
the dispatch is FAILED at once with the reason kept. Any other ``Exception``
raised by a messenger counts as temporary, with its text recorded.
"""


class MessengerError(Exception):
    """Base class of transport errors."""

    permanent = False

    def __init__(
        self, message: str = "", *, retry_after: float | None = None, result: dict | None = None
    ):
        super().__init__(message)
        self.retry_after = retry_after
        #: Stored on the dispatch with this outcome: what a later attempt needs
        #: to resume (say, the parts of a split text already delivered).
        self.result = result


class TemporaryError(MessengerError):
    """The send may succeed later: connection trouble, rate limits, 4xx SMTP replies."""


class RateLimited(TemporaryError):
    """The provider asked us to slow down: the rest of the batch waits as well."""


class PermanentError(MessengerError):
    """The send will never succeed as it is: rejected address, blocked bot, bad credentials."""

    permanent = True


class InvalidAddress(ValueError):
    """An address a messenger cannot deliver to (raised before anything is written)."""


class MessengerConfigurationError(Exception):
    """A messenger was configured with options it cannot work with."""
