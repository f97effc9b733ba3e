"""Moderation of private messages: django-postman's auto-moderators, and decisions by a person.

An auto-moderator is a callable taking the message and returning a rating
(or ``(rating, reason)``):

- ``0`` or ``False``: reject, and stop there;
- ``100`` or ``True``: accept, and stop there;
- ``None``: no opinion;
- ``1``..``99``: averaged with the other ratings of this kind; an average of
  50 or more accepts, less rejects (the reasons of the ratings under 50 are
  joined into the rejection reason).

When no moderator has an opinion, ``DISPATCHER_INBOX_AUTO_MODERATE_AS``
decides: ``True`` accepts, ``False`` rejects, ``None`` (the default) leaves the
message pending for a moderator in the admin. A rating without a reason takes
the moderator's ``default_reason`` attribute, if it has one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone
from django.utils.text import Truncator

from .models import REASON_MAX_LENGTH, PrivateMessage, Status
from .notifications import notify_users
from .signals import message_sent, send_after_commit

logger = logging.getLogger("dispatcher.inbox.moderation")

AutoModerator = Callable[[PrivateMessage], Any]


def _as_list(moderators: AutoModerator | Iterable[AutoModerator] | None) -> list[AutoModerator]:
    if moderators is None:
        return []
    if callable(moderators):
        return [moderators]
    return list(moderators)


def _reason(text: Any) -> str:
    return Truncator(str(text or "").strip()).chars(REASON_MAX_LENGTH)


def rate(message: PrivateMessage, moderators: AutoModerator | Iterable[AutoModerator] | None
         ) -> tuple[bool | None, str]:
    """Run the auto-moderators on ``message``: ``(True/False/None, reason)``.

    ``None`` means no moderator had an opinion (the setting decides then).
    """
    percents: list[float] = []
    reasons: list[str] = []
    for moderator in _as_list(moderators):
        rating = moderator(message)
        if rating is None:
            continue
        if isinstance(rating, tuple):
            rating, reason = rating
        else:
            reason = getattr(moderator, "default_reason", "")
        if rating is True:
            rating = 100
        elif rating is False:
            rating = 0
        if rating is None:
            continue
        if not isinstance(rating, Real) or not 0 <= float(rating) <= 100:
            # django-postman ignores these too; say so, as it is most likely a bug.
            logger.warning("auto-moderator %r returned %r, not a rating from 0 to 100: ignored",
                           moderator, rating)
            continue
        if rating == 0:
            return False, _reason(reason)
        if rating == 100:
            return True, ""
        percents.append(float(rating))
        reasons.append(str(reason or ""))
    if not percents:
        return None, ""
    if sum(percents) / len(percents) >= 50:
        return True, ""
    low = [r.strip() for p, r in zip(percents, reasons, strict=True) if p < 50 and r.strip()]
    return False, _reason(", ".join(low))


def auto_moderate(message: PrivateMessage,
                  moderators: AutoModerator | Iterable[AutoModerator] | None) -> None:
    """Set the message's moderation status (and reason) from its auto-moderators.

    Leaves the message pending when nobody, not even the setting, decides.
    """
    decision, reason = rate(message, moderators)
    if decision is None:
        decision = getattr(settings, "DISPATCHER_INBOX_AUTO_MODERATE_AS", None)
    if decision is True:
        message.moderation_status = Status.ACCEPTED
    elif decision is False:
        message.moderation_status = Status.REJECTED
        message.moderation_reason = reason


def clean_moderation(message: PrivateMessage, initial_status: str, moderator: Any = None) -> None:
    """Record who decided and when, once the status changed.

    A rejected message is deleted on the recipient's side, as in django-postman,
    so it never shows up there and ``inbox_cleanup`` can remove it once the
    sender deletes it too.
    """
    if message.moderation_status == initial_status:
        return
    now = timezone.now()
    message.moderation_date = now
    message.moderation_by = moderator
    if message.moderation_status == Status.REJECTED:
        message.recipient_deleted_at = now
    else:
        message.moderation_reason = ""
        if initial_status == Status.REJECTED:
            message.recipient_deleted_at = None


def update_replied(parent_ids: Iterable[Any]) -> int:
    """Recompute ``replied_at`` of parents: when their recipient last answered
    with an accepted reply (None when no reply is accepted), in one UPDATE."""
    parent_ids = {pk for pk in parent_ids if pk is not None}
    if not parent_ids:
        return 0
    last_reply = (
        PrivateMessage.objects.filter(
            parent=OuterRef("pk"), sender=OuterRef("recipient"), moderation_status=Status.ACCEPTED
        )
        .order_by()
        .values("parent")
        .annotate(last=Max("sent_at"))
        .values("last")[:1]
    )
    return PrivateMessage.objects.filter(pk__in=parent_ids).update(
        replied_at=Subquery(last_reply, output_field=models.DateTimeField())
    )


def moderate(
    messages: models.QuerySet | Sequence[PrivateMessage],
    accept: bool,
    moderator: Any = None,
    reason: str = "",
    skip_notification: bool = False,
) -> int:
    """Accept or reject messages, as a moderator; returns how many changed.

    Messages already in the asked status are left alone. Leaving ``pending``
    notifies: the recipient of an acceptance, the sender of a rejection (with
    ``reason``). Acceptance fires ``message_sent``. The notification of each
    distinct message is a notification of its own, so the query count grows
    with the number of messages decided at once (an admin page at most).
    """
    target = Status.ACCEPTED if accept else Status.REJECTED
    if isinstance(messages, models.QuerySet):
        # Whatever the caller's queryset does (an admin search may add DISTINCT,
        # which FOR UPDATE refuses), lock by primary key.
        selected: Any = messages.order_by().values("pk")
    else:
        selected = [m.pk for m in messages]
    with transaction.atomic():
        rows = list(
            PrivateMessage.objects.filter(pk__in=selected)
            .exclude(moderation_status=target)
            .select_related("sender", "recipient")
            .select_for_update(of=("self",))
            .order_by("pk")
        )
        if not rows:
            return 0
        initial = [m.moderation_status for m in rows]
        for message, status in zip(rows, initial, strict=True):
            message.moderation_status = target
            clean_moderation(message, status, moderator)
            if not accept:
                message.moderation_reason = _reason(reason)
        PrivateMessage.objects.bulk_update(
            rows,
            ["moderation_status", "moderation_date", "moderation_by", "moderation_reason",
             "recipient_deleted_at"],
        )
        update_replied(m.parent_id for m in rows)
        if not skip_notification:
            notify_users(rows, initial)
        if accept:
            send_after_commit(message_sent, rows)
    return len(rows)
