"""The private-message API: django-postman's ``pm_write``/``pm_broadcast`` and
django-directmessages' ``Inbox``, on one model.

Everything a call writes (the message, its parent's thread and reply state,
the notification rows) commits together or not at all; notifications are
published to the broker and the ``message_sent``/``message_read`` signals are
sent only after the commit.

Differences from the seeds, all on purpose:

- directmessages let anyone read and read-mark any message; here, given a
  user, only the recipient may (:class:`MessagePermissionDenied` otherwise).
- A message that does not exist raises :class:`MessageNotFound` instead of
  returning an empty string.
- ``get_conversation(mark_read=True)`` marks only the messages addressed to
  ``user1``; directmessages also cleared the unread state of the other side.
- Signals are sent after the change is saved and committed.
- ``pm_broadcast`` accepts any iterable of users (a QuerySet, say), not only a
  list or tuple, and writes the rows with one bulk insert.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from django.db.models import Case, F, Max, Q, When
from django.utils import timezone

from dispatcher.validation import has_control_characters, is_unstorable

from .exceptions import InvalidMessage, MessageNotFound, MessagePermissionDenied, RecipientRefused
from .exchange import check_exchange as _check_exchange
from .models import (
    STATUS_ACCEPTED,
    STATUS_PENDING,
    STATUS_REJECTED,
    SUBJECT_MAX_LENGTH,
    PrivateMessage,
    Status,
)
from .moderation import AutoModerator, auto_moderate, clean_moderation, update_replied
from .notifications import notify_accepted, notify_users
from .signals import message_read, message_sent, send_after_commit

__all__ = [
    "STATUS_ACCEPTED",
    "STATUS_PENDING",
    "STATUS_REJECTED",
    "Inbox",
    "InvalidMessage",
    "MessageNotFound",
    "MessagePermissionDenied",
    "MessagingService",
    "PrivateMessage",
    "RecipientRefused",
    "pm_broadcast",
    "pm_write",
]


def _is_user(value: Any) -> bool:
    return isinstance(value, get_user_model())


def _visitor_email(value: Any, role: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessage(f"the {role} must be a user or a visitor's e-mail address, not {value!r}")
    try:
        validate_email(value)
    except ValidationError:
        raise InvalidMessage(f"the {role} {value!r} is not an e-mail address") from None
    return value


def _user_pk(user: Any) -> Any:
    return user.pk if isinstance(user, models.Model) else user


def _check_saved(user: Any, role: str) -> None:
    if user.pk is None:
        raise InvalidMessage(f"the {role} {user} is not saved")


def _checked_text(subject: Any, body: Any) -> tuple[str, str]:
    """The subject and body as stored, or :class:`InvalidMessage`.

    The subject becomes the notification mail's Subject header, so it is one
    line: a CR/LF (or any control character) in it is refused here, when the
    message is written, not left for a messenger to find. Neither may hold
    what the database cannot store (NUL, a lone surrogate).
    """
    subject = "" if subject is None else str(subject)
    body = "" if body is None else str(body)
    if len(subject) > SUBJECT_MAX_LENGTH:
        raise InvalidMessage(f"the subject is longer than {SUBJECT_MAX_LENGTH} characters")
    if has_control_characters(subject):
        raise InvalidMessage("the subject must be one line, without control characters")
    if is_unstorable(body):
        raise InvalidMessage("the body holds a NUL character or an invalid (lone surrogate) character")
    return subject, body


def _new_message(sender: Any, recipient: Any, subject: str, body: str) -> PrivateMessage:
    """An unsaved message between users, or a user and a visitor's address."""
    subject, body = _checked_text(subject, body)
    message = PrivateMessage(subject=subject, body=body)
    if _is_user(sender):
        _check_saved(sender, "sender")
        message.sender = sender
    else:
        message.email = _visitor_email(sender, "sender")
    if _is_user(recipient):
        _check_saved(recipient, "recipient")
        message.recipient = recipient
    elif message.email:
        raise InvalidMessage("a visitor cannot write to another visitor")
    else:
        message.email = _visitor_email(recipient, "recipient")
    return message


def _attach_to_parent(message: PrivateMessage, parent: Any) -> PrivateMessage:
    """Make ``message`` a reply to ``parent``: same thread, between the same two parties."""
    if not isinstance(parent, PrivateMessage):
        try:
            parent = PrivateMessage.objects.get(pk=parent)
        except (PrivateMessage.DoesNotExist, ValueError, TypeError, ValidationError):
            raise MessageNotFound(parent) from None
    parties = {(parent.sender_id, parent.recipient_id), (parent.recipient_id, parent.sender_id)}
    if (message.sender_id, message.recipient_id) not in parties:
        raise InvalidMessage("a reply goes between the two parties of the message it answers")
    if message.sender_id == parent.recipient_id and parent.moderation_status != Status.ACCEPTED:
        # The replier never received it: answering it would reveal it.
        raise MessageNotFound(parent.pk)
    message.parent = parent
    message.thread_id = parent.thread_id or parent.pk
    return parent


def pm_write(
    sender: Any,
    recipient: Any,
    subject: str,
    body: str = "",
    skip_notification: bool = False,
    auto_archive: bool = False,
    auto_delete: bool = False,
    auto_moderators: AutoModerator | Iterable[AutoModerator] | None = None,
    *,
    parent: PrivateMessage | int | None = None,
    check_exchange: bool = True,
) -> PrivateMessage:
    """Write a message to a user; returns the created message.

    As django-postman's: contrary to :func:`pm_broadcast`, the message is
    archived (``auto_archive``) and/or deleted (``auto_delete``) on the sender
    side only if asked. Without ``auto_moderators`` the message is accepted
    at once (the caller is trusted); with them, they decide (see
    :mod:`dispatcher.inbox.moderation`), and a message nobody decides on stays
    pending for a moderator. Acceptance notifies the recipient and rejection
    the sender, unless ``skip_notification``.

    ``sender`` and ``recipient`` are users; either one (not both) may be the
    e-mail address of a visitor. ``parent`` makes the message a reply, in the
    same thread.

    A recipient who blocked the sender, or whom the site's exchange filter
    (``DISPATCHER_INBOX_EXCHANGE_FILTER``) refuses, raises
    :class:`RecipientRefused` with the reason, and nothing is written;
    ``check_exchange=False`` skips both, for messages the site itself sends.
    """
    message = _new_message(sender, recipient, subject, body)
    if check_exchange and message.recipient_id is not None:
        _check_exchange(message.sender, message.recipient)
    parent_obj = _attach_to_parent(message, parent) if parent is not None else None
    initial_status = message.moderation_status
    if auto_moderators:
        auto_moderate(message, auto_moderators)
    else:
        message.moderation_status = Status.ACCEPTED
    clean_moderation(message, initial_status)
    if auto_archive:
        message.sender_archived = True
    if auto_delete:
        message.sender_deleted_at = timezone.now()
    with transaction.atomic():
        message.save()
        if parent_obj is not None:
            if parent_obj.thread_id is None:
                PrivateMessage.objects.filter(pk=parent_obj.pk, thread__isnull=True).update(
                    thread=parent_obj.pk
                )
                parent_obj.thread_id = parent_obj.pk
            if message.is_accepted():
                update_replied([parent_obj.pk])
        if not skip_notification:
            notify_users([message], [initial_status])
        if message.is_accepted():
            send_after_commit(message_sent, [message])
    return message


def _as_user_list(recipients: Any) -> list[Any]:
    if recipients is None:
        return []
    if isinstance(recipients, (models.Model, str)) or not isinstance(recipients, Iterable):
        recipients = [recipients]
    users: list[Any] = []
    seen: set[Any] = set()
    for user in recipients:
        if not _is_user(user):
            raise InvalidMessage(f"pm_broadcast() sends to users only, not {user!r}")
        _check_saved(user, "recipient")
        if user.pk not in seen:
            seen.add(user.pk)
            users.append(user)
    return users


def pm_broadcast(
    sender: Any,
    recipients: Any,
    subject: str,
    body: str = "",
    skip_notification: bool = False,
) -> list[PrivateMessage]:
    """Broadcast a message to users; returns the created messages.

    As django-postman's: every copy is archived and deleted on the sender's
    side (the sender has nothing to clean up) and accepted (the caller is
    trusted). ``recipients`` is one user, or a list, tuple, QuerySet or any
    iterable of users; a user listed twice gets one copy. All rows are written
    with one bulk insert and their notifications share one notification
    message, so the query count does not grow with the number of recipients.
    """
    if not _is_user(sender):
        raise InvalidMessage(f"pm_broadcast() needs a user as sender, not {sender!r}")
    _check_saved(sender, "sender")
    subject, body = _checked_text(subject, body)
    users = _as_user_list(recipients)
    if not users:
        return []
    now = timezone.now()
    messages = [
        PrivateMessage(
            subject=subject,
            body=body,
            sender=sender,
            recipient=user,
            sent_at=now,
            sender_archived=True,
            sender_deleted_at=now,
            moderation_status=Status.ACCEPTED,
            moderation_date=now,
        )
        for user in users
    ]
    with transaction.atomic():
        PrivateMessage.objects.bulk_create(messages)
        if not skip_notification:
            notify_accepted(messages)
        send_after_commit(message_sent, messages)
    return messages


def _message_pk(message: Any) -> Any:
    return message.pk if isinstance(message, PrivateMessage) else message


def _as_list(messages: Any) -> list[Any]:
    if isinstance(messages, (models.Model, str, int)) or not isinstance(messages, Iterable):
        return [messages]
    return list(messages)


class MessagingService:
    """django-directmessages' API: ``Inbox.send_message(...)`` and friends.

    ``Inbox`` is an instance of this class, as in directmessages, so the
    seed's calls work unchanged.
    """

    def send_message(self, from_user: Any, to_user: Any, message: Any,
                     skip_notification: bool = False) -> PrivateMessage:
        """Send ``message`` (its text) from one user to another; returns the message.

        Accepted at once, notified to ``to_user`` unless ``skip_notification``.
        directmessages returned ``(message, 200)``; this returns the message.
        """
        if not (_is_user(from_user) and _is_user(to_user)):
            raise InvalidMessage("send_message() goes from a user to a user")
        if from_user.pk == to_user.pk:
            raise InvalidMessage("You can't send messages to yourself.")
        return pm_write(from_user, to_user, "", str(message), skip_notification=skip_notification)

    def get_unread_messages(self, user: Any) -> models.QuerySet:
        """The user's unread inbox, newest first (senders selected in the same query)."""
        return PrivateMessage.objects.inbox(user, unread=True)

    def get_message(self, message: Any, user: Any = None) -> PrivateMessage:
        """A delivered (accepted) message; given ``user``, only one they sent or received.

        Raises :class:`MessageNotFound`, never returns an empty value.
        """
        pk = _message_pk(message)
        qs = PrivateMessage.objects.select_related("sender", "recipient")
        qs = qs.visible_to(user) if user is not None else qs.filter(moderation_status=Status.ACCEPTED)
        try:
            return qs.get(pk=pk)
        except (PrivateMessage.DoesNotExist, ValueError, TypeError, ValidationError):
            raise MessageNotFound(pk) from None

    def _readable(self, message: Any, user: Any) -> PrivateMessage:
        msg = self.get_message(message)
        if user is not None and msg.recipient_id != getattr(user, "pk", None):
            raise MessagePermissionDenied(
                f"{user} is not the recipient of private message {msg.pk}: only the recipient "
                "may read-mark it"
            )
        return msg

    def read_message(self, message: Any, user: Any = None) -> str:
        """Return the message's text and mark it read.

        ``message`` is a message or its id. Given ``user``, only the recipient
        may do this; anyone else gets :class:`MessagePermissionDenied`. The
        seed's one-argument call still works.
        """
        msg = self._readable(message, user)
        self._mark_read([msg])
        return msg.body

    def read_message_formatted(self, message: Any, user: Any = None) -> str:
        """``"<username>: <text>"``, marking the message read; same rules as :meth:`read_message`.

        The name is ``get_username()``, so custom user models work.
        """
        msg = self._readable(message, user)
        self._mark_read([msg])
        return f"{msg.sender_label}: {msg.body}"

    def mark_as_read(self, message: Any, user: Any = None) -> bool:
        """Mark one message read; True if it was unread. Same rules as :meth:`read_message`."""
        msg = self._readable(message, user)
        return bool(self._mark_read([msg]))

    def mark_read_for(self, user: Any, messages: Any) -> int:
        """Mark read those of ``messages`` (messages or ids) that ``user`` received;
        the others are left alone. Returns how many were marked."""
        ids = [_message_pk(m) for m in _as_list(messages)]
        return self._mark_read(list(
            PrivateMessage.objects.received_by(user).filter(pk__in=ids, read_at__isnull=True)
        ))

    def mark_unread_for(self, user: Any, messages: Any) -> int:
        """Mark unread again those of ``messages`` that ``user`` received (one UPDATE)."""
        ids = [_message_pk(m) for m in _as_list(messages)]
        return PrivateMessage.objects.received_by(user).filter(pk__in=ids, read_at__isnull=False).update(
            read_at=None
        )

    def _mark_read(self, messages: list[PrivateMessage]) -> int:
        """Mark unread messages read with one UPDATE; ``message_read`` fires once
        per message that this call (and no concurrent one) marked."""
        unread = {m.pk: m for m in messages if m.read_at is None}
        if not unread:
            return 0
        now = timezone.now()
        with transaction.atomic():
            ids = set(
                PrivateMessage.objects.select_for_update()
                .filter(pk__in=list(unread), read_at__isnull=True)
                .values_list("pk", flat=True)
            )
            if ids:
                PrivateMessage.objects.filter(pk__in=ids).update(read_at=now)
            marked = [m for pk, m in unread.items() if pk in ids]
            for m in marked:
                m.read_at = now
            send_after_commit(message_read, marked)
        return len(marked)

    def get_conversations(self, user: Any) -> list[Any]:
        """The users ``user`` exchanged messages with, most recent exchange first.

        Computed in SQL (one grouped query, then one for the users); each user
        carries ``last_message_at``. Messages the user deleted do not count.
        """
        pk = user.pk
        partner = Case(When(sender=pk, then=F("recipient")), default=F("sender"))
        rows = list(
            PrivateMessage.objects.filter(
                Q(sender=pk, sender_deleted_at__isnull=True)
                | Q(recipient=pk, moderation_status=Status.ACCEPTED, recipient_deleted_at__isnull=True)
            )
            .annotate(partner=partner)
            .filter(partner__isnull=False)
            .exclude(partner=pk)
            .values("partner")
            .annotate(last=Max("sent_at"))
            .order_by("-last", "-partner")
        )
        users = get_user_model()._default_manager.in_bulk([r["partner"] for r in rows])
        result = []
        for row in rows:
            partner_user = users.get(row["partner"])
            if partner_user is not None:
                partner_user.last_message_at = row["last"]
                result.append(partner_user)
        return result

    def get_conversation(self, user1: Any, user2: Any, limit: int | None = None,
                         newest_first: bool = False, mark_read: bool = False,
                         **seed_names: bool) -> list[PrivateMessage]:
        """The messages between two users (or user ids), as ``user1`` sees them.

        Oldest first; ``limit`` keeps the first ``limit`` of them, or with
        ``newest_first`` the ``limit`` latest, newest first (django-directmessages
        calls it ``reversed``, and ``reversed=True`` is accepted). ``mark_read`` marks
        the returned messages addressed to ``user1`` read (never the ones
        ``user1`` sent). ``user1``'s own pending messages are included, the
        other side's only once accepted; messages ``user1`` deleted are not.
        """
        # Either may be a user id: the JSON API asks by id without looking the
        # user up, so an unknown id answers as a user with no messages does.
        a, b = _user_pk(user1), _user_pk(user2)
        if "reversed" in seed_names:
            newest_first = seed_names.pop("reversed")
        if seed_names:
            raise TypeError(f"get_conversation() got unexpected keyword arguments {sorted(seed_names)}")
        order = ("-sent_at", "-id") if newest_first else ("sent_at", "id")
        qs = (
            PrivateMessage.objects.filter(
                Q(sender=a, recipient=b, sender_deleted_at__isnull=True)
                | Q(sender=b, recipient=a, moderation_status=Status.ACCEPTED,
                    recipient_deleted_at__isnull=True)
            )
            .select_related("sender", "recipient")
            .order_by(*order)
        )
        if limit:
            qs = qs[: int(limit)]
        messages = list(qs)
        if mark_read:
            self._mark_read([m for m in messages if m.recipient_id == a])
        return messages

    # -- folders (django-postman's), for convenience ------------------------------
    def inbox(self, user: Any, unread: bool = False) -> models.QuerySet:
        return PrivateMessage.objects.inbox(user, unread=unread)

    def sent(self, user: Any) -> models.QuerySet:
        return PrivateMessage.objects.sent(user)

    def archives(self, user: Any) -> models.QuerySet:
        return PrivateMessage.objects.archives(user)

    def trash(self, user: Any) -> models.QuerySet:
        return PrivateMessage.objects.trash(user)

    def thread(self, user: Any, message: Any) -> models.QuerySet:
        return PrivateMessage.objects.thread(user, self.get_message(message, user))

    def unread_count(self, user: Any) -> int:
        return PrivateMessage.objects.unread_count(user)


Inbox = MessagingService()
