"""The one rule that turns a messenger's marks and exceptions into outcomes.

A messenger may report an outcome by calling ``mark_sent``/``mark_error``/
``mark_failed`` (the django-sitemessage style), by raising, or both. Whatever
it does, the rule is the same, and it lives here only:

- the first outcome recorded for a dispatch wins, except that SENT replaces
  an earlier error (the messenger retried by itself and succeeded), and
  nothing replaces SENT;
- a :class:`PermanentError` is a FAILED outcome; any other ``Exception`` is a
  temporary ERROR, with the ``retry_after`` the error carries;
- a dispatch that ``send`` left unmarked, without raising, is an ERROR: it
  is retried, never silently taken as sent.

The delivery engine subclasses :class:`Outcomes` to write outcomes to the
database in bulk; ``send_test_message`` uses it as it is, in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import PermanentError

SENT, ERROR, FAILED = "sent", "error", "failed"

UNMARKED = "the messenger returned without marking this dispatch"


@dataclass(frozen=True)
class Outcome:
    status: str
    error: BaseException | str | None = None
    retry_after: float | None = None
    #: What the provider answered that is worth keeping (ids, resume state).
    result: Mapping[str, Any] | None = None


def outcome_of(error: BaseException, result: Mapping[str, Any] | None = None) -> Outcome:
    """The outcome an exception raised by a messenger stands for; a
    :class:`MessengerError` may carry a result of its own (resume state)."""
    if result is None:
        result = getattr(error, "result", None)
    if isinstance(error, PermanentError):
        return Outcome(FAILED, error, None, result)
    return Outcome(ERROR, error, getattr(error, "retry_after", None), result)


def _key(dispatch: Any) -> Any:
    return getattr(dispatch, "id", None) if getattr(dispatch, "id", None) is not None else id(dispatch)


class Outcomes:
    """The outcomes of one batch, keyed by dispatch id."""

    def __init__(self) -> None:
        self.outcomes: dict[Any, Outcome] = {}

    def record(self, dispatch: Any, outcome: Outcome) -> bool:
        """Apply the rule; return whether ``outcome`` became the dispatch's outcome."""
        key = _key(dispatch)
        previous = self.outcomes.get(key)
        if previous is not None and (previous.status == SENT or outcome.status != SENT):
            return False
        self.outcomes[key] = outcome
        self.recorded(dispatch, outcome)
        return True

    def recorded(self, dispatch: Any, outcome: Outcome) -> None:
        """Called for each outcome that took effect; subclasses write it down."""

    # -- the three marks, and exceptions ---------------------------------------------
    def sent(self, dispatch: Any, result: Mapping[str, Any] | None = None) -> None:
        self.record(dispatch, Outcome(SENT, result=result))

    def error(
        self,
        dispatch: Any,
        error: BaseException | str,
        retry_after: float | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        if retry_after is None and isinstance(error, BaseException):
            retry_after = getattr(error, "retry_after", None)
        self.record(dispatch, Outcome(ERROR, error, retry_after, result))

    def failed(
        self, dispatch: Any, error: BaseException | str, result: Mapping[str, Any] | None = None
    ) -> None:
        self.record(dispatch, Outcome(FAILED, error, None, result))

    def exception(self, dispatch: Any, error: BaseException, result: Mapping[str, Any] | None = None) -> None:
        self.record(dispatch, outcome_of(error, result))

    # -- after send() ------------------------------------------------------------------
    def is_marked(self, dispatch: Any) -> bool:
        return _key(dispatch) in self.outcomes

    def get(self, dispatch: Any) -> Outcome | None:
        return self.outcomes.get(_key(dispatch))

    def settle(self, dispatches: Iterable[Any], raised: BaseException | None) -> None:
        """After ``send`` returned or raised: every dispatch it left unmarked gets
        the outcome of what it raised, or an ERROR if it raised nothing."""
        for dispatch in dispatches:
            if not self.is_marked(dispatch):
                if raised is not None:
                    self.exception(dispatch, raised)
                else:
                    self.error(dispatch, UNMARKED)
