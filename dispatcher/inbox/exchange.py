"""Who may write to whom: blocks, and the site's exchange filter.

django-postman's *exchange filter* is a function of the sender, one
recipient and the list of all recipients of the message being written. It
returns ``None`` when the exchange is allowed; anything else refuses it:
a string is the reason shown to the sender, and an empty string or ``False``
refuses with a general reason. Name it in the settings::

    DISPATCHER_INBOX_EXCHANGE_FILTER = "mysite.messaging.only_mutual_followers"

Before the filter, blocks apply: a user who blocked the sender
(:class:`~dispatcher.inbox.models.Block`) receives nothing from them. The
same rule holds on the write and reply pages, in the JSON API's ``send``, and
in :func:`~dispatcher.inbox.api.pm_write` (which raises
:class:`~dispatcher.inbox.exceptions.RecipientRefused`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.module_loading import import_string

from .exceptions import RecipientRefused
from .models import Block

#: What a blocked sender is told: not that they were blocked.
BLOCKED_REASON = "this user does not accept messages from you"
#: What the sender is told when the filter refuses without a reason.
DEFAULT_REASON = "you may not write to this user"

ExchangeFilter = Callable[[Any, Any, Sequence[Any]], Any]


def exchange_filter() -> ExchangeFilter | None:
    """``DISPATCHER_INBOX_EXCHANGE_FILTER``: a callable, a dotted path to one, or None."""
    value = getattr(settings, "DISPATCHER_INBOX_EXCHANGE_FILTER", None)
    if value is None or value == "":
        return None
    return import_string(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


def _is_user(value: Any) -> bool:
    return isinstance(value, get_user_model())


def is_blocked(sender: Any, recipient: Any) -> bool:
    """Whether ``recipient`` blocked ``sender`` (one indexed query)."""
    if not (_is_user(sender) and _is_user(recipient)):
        return False
    return Block.objects.filter(blocker=recipient.pk, blocked=sender.pk).exists()


def refusal(sender: Any, recipient: Any, recipients: Sequence[Any] | None = None) -> str | None:
    """Why ``sender`` may not write to ``recipient``, or None when they may.

    ``sender`` is a user or None (a visitor); ``recipient`` a user (a
    visitor's address is never refused). ``recipients`` is every recipient of
    the message being written, for filters that limit how many at once.
    """
    if not _is_user(recipient):
        return None
    if is_blocked(sender, recipient):
        return BLOCKED_REASON
    check = exchange_filter()
    if check is None:
        return None
    verdict = check(sender if _is_user(sender) else None, recipient, list(recipients or [recipient]))
    if verdict is None or verdict is True:
        return None
    return str(verdict) if verdict else DEFAULT_REASON


def check_exchange(sender: Any, recipient: Any, recipients: Sequence[Any] | None = None) -> None:
    """Raise :class:`RecipientRefused` when :func:`refusal` refuses."""
    reason = refusal(sender, recipient, recipients)
    if reason is not None:
        raise RecipientRefused(recipient, reason)


def block(blocker: Any, blocked: Any) -> bool:
    """``blocker`` stops receiving messages from ``blocked``; True if this is new."""
    if blocker.pk == blocked.pk:
        raise ValueError("a user cannot block themselves")
    _, created = Block.objects.get_or_create(blocker=blocker, blocked=blocked)
    return created


def unblock(blocker: Any, blocked: Any) -> bool:
    """Lift a block; True if there was one."""
    blocked_pk = blocked.pk if hasattr(blocked, "pk") else blocked
    return bool(Block.objects.filter(blocker=blocker.pk, blocked=blocked_pk).delete()[0])
