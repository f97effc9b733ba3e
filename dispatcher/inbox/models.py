"""Private messages between users (django-postman's model, with directmessages' API on top).

A message has two sides, the sender's and the recipient's, and each keeps its
own archived flag and deleted-at date, so one side cleaning up never changes
what the other sees. A visitor (someone without an account) is an e-mail
address in ``email`` on the side where the user is missing.

Distinct from :class:`dispatcher.models.Message`, which is a notification on
its way through a messenger.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.text import Truncator

SUBJECT_MAX_LENGTH = 120
REASON_MAX_LENGTH = 250


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


STATUS_PENDING = Status.PENDING
STATUS_ACCEPTED = Status.ACCEPTED
STATUS_REJECTED = Status.REJECTED


def _pk(obj: Any) -> Any:
    return obj.pk if isinstance(obj, models.Model) else obj


class PrivateMessageQuerySet(models.QuerySet):
    """The folders of django-postman, for one user each.

    Every folder selects the sender and the recipient in the same query, so
    listing a folder costs the same number of queries for 3 messages or 3000.
    """

    def _with_users(self) -> PrivateMessageQuerySet:
        return self.select_related("sender", "recipient")

    def received_by(self, user: Any) -> PrivateMessageQuerySet:
        """What the recipient may see: accepted messages addressed to them."""
        return self.filter(recipient=_pk(user), moderation_status=Status.ACCEPTED)

    def visible_to(self, user: Any) -> PrivateMessageQuerySet:
        """Messages the user sent (any status) or received (accepted), deleted or not."""
        pk = _pk(user)
        return self.filter(Q(sender=pk) | Q(recipient=pk, moderation_status=Status.ACCEPTED))

    def inbox(self, user: Any, unread: bool = False) -> PrivateMessageQuerySet:
        """Received, accepted, neither archived nor deleted; newest first."""
        qs = self.received_by(user).filter(recipient_archived=False, recipient_deleted_at__isnull=True)
        if unread:
            qs = qs.filter(read_at__isnull=True)
        return qs._with_users().order_by("-sent_at", "-id")

    def sent(self, user: Any) -> PrivateMessageQuerySet:
        """Sent (whatever their moderation status), neither archived nor deleted by the sender."""
        return (
            self.filter(sender=_pk(user), sender_archived=False, sender_deleted_at__isnull=True)
            ._with_users()
            .order_by("-sent_at", "-id")
        )

    def archives(self, user: Any) -> PrivateMessageQuerySet:
        """Archived and not deleted, on whichever side the user is."""
        pk = _pk(user)
        return (
            self.filter(
                Q(recipient=pk, moderation_status=Status.ACCEPTED, recipient_archived=True,
                  recipient_deleted_at__isnull=True)
                | Q(sender=pk, sender_archived=True, sender_deleted_at__isnull=True)
            )
            ._with_users()
            .order_by("-sent_at", "-id")
        )

    def trash(self, user: Any) -> PrivateMessageQuerySet:
        """Deleted by the user (and not yet removed by ``inbox_cleanup``)."""
        pk = _pk(user)
        return (
            self.filter(
                Q(recipient=pk, moderation_status=Status.ACCEPTED, recipient_deleted_at__isnull=False)
                | Q(sender=pk, sender_deleted_at__isnull=False)
            )
            ._with_users()
            .order_by("-sent_at", "-id")
        )

    def thread(self, user: Any, message: Any) -> PrivateMessageQuerySet:
        """The whole conversation ``message`` belongs to, as the user may see it, oldest first."""
        if not isinstance(message, PrivateMessage):
            message = PrivateMessage.objects.only("pk", "thread_id").get(pk=message)
        root = message.thread_id or message.pk
        return (
            self.filter(Q(pk=root) | Q(thread=root))
            .visible_to(user)
            ._with_users()
            .order_by("sent_at", "id")
        )

    def unread_count(self, user: Any) -> int:
        """Unread messages in the user's inbox (what postman's ``unread-count`` shows)."""
        return self.received_by(user).filter(
            read_at__isnull=True, recipient_archived=False, recipient_deleted_at__isnull=True
        ).count()

    # -- per-side state changes --------------------------------------------------
    def _side_update(self, user: Any, ids: Any, **changes: Any) -> int:
        """Apply ``sender_<x>``/``recipient_<x>`` changes on the user's side of each message."""
        pk = _pk(user)
        if isinstance(ids, (models.Model, str, int)) or not isinstance(ids, Iterable):
            ids = [ids]
        ids = [_pk(i) for i in ids]
        count = self.filter(pk__in=ids, sender=pk).update(**{f"sender_{k}": v for k, v in changes.items()})
        count += self.filter(pk__in=ids, recipient=pk, moderation_status=Status.ACCEPTED).update(
            **{f"recipient_{k}": v for k, v in changes.items()}
        )
        return count

    def archive(self, user: Any, messages: Any) -> int:
        """Archive messages on the user's side; returns how many rows changed."""
        return self._side_update(user, messages, archived=True)

    def unarchive(self, user: Any, messages: Any) -> int:
        return self._side_update(user, messages, archived=False)

    def delete_for(self, user: Any, messages: Any) -> int:
        """Move messages to the user's trash. Rows go only when both sides deleted
        them, with ``manage.py inbox_cleanup``."""
        return self._side_update(user, messages, deleted_at=timezone.now())

    def undelete_for(self, user: Any, messages: Any) -> int:
        return self._side_update(user, messages, deleted_at=None)


class PrivateMessage(models.Model):
    """A message from one user (or visitor) to another."""

    subject = models.CharField(max_length=SUBJECT_MAX_LENGTH, blank=True)
    body = models.TextField(blank=True)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="sent_private_messages", db_index=False,  # led by pm_sender_idx
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="received_private_messages", db_index=False,  # led by pm_recipient_idx
    )
    #: A visitor's address: the sender's when ``sender`` is empty, else the recipient's.
    email = models.EmailField(blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    #: The first message of the conversation (itself, once it has a reply).
    thread = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="thread_messages",
        db_index=False,  # led by pm_thread_idx
    )
    sent_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    sender_archived = models.BooleanField(default=False)
    recipient_archived = models.BooleanField(default=False)
    sender_deleted_at = models.DateTimeField(null=True, blank=True)
    recipient_deleted_at = models.DateTimeField(null=True, blank=True)
    moderation_status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    moderation_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="moderated_private_messages",
    )
    moderation_date = models.DateTimeField(null=True, blank=True)
    moderation_reason = models.CharField(max_length=REASON_MAX_LENGTH, blank=True)

    objects = PrivateMessageQuerySet.as_manager()

    class Meta:
        ordering = ["-sent_at", "-id"]
        verbose_name = "private message"
        constraints = [
            models.CheckConstraint(
                condition=Q(sender__isnull=False) | Q(recipient__isnull=False),
                name="pm_has_a_user",
            ),
            models.CheckConstraint(
                condition=(Q(sender__isnull=False) & Q(recipient__isnull=False)) | ~Q(email=""),
                name="pm_visitor_has_email",
            ),
        ]
        indexes = [
            # The inbox page: what one recipient still has in the inbox, newest first.
            models.Index(
                fields=["recipient", "-sent_at", "-id"], name="pm_inbox_idx",
                condition=Q(moderation_status="accepted", recipient_archived=False,
                            recipient_deleted_at__isnull=True),
            ),
            # Unread counts, polled often: a small partial index of unread rows.
            models.Index(
                fields=["recipient"], name="pm_unread_idx",
                condition=Q(read_at__isnull=True, moderation_status="accepted",
                            recipient_archived=False, recipient_deleted_at__isnull=True),
            ),
            # Archives, trash, conversations from the recipient's side.
            models.Index(fields=["recipient", "sent_at"], name="pm_recipient_idx"),
            # The sent folder: what one sender still keeps there, newest first.
            models.Index(
                fields=["sender", "-sent_at", "-id"], name="pm_sent_idx",
                condition=Q(sender_archived=False, sender_deleted_at__isnull=True),
            ),
            # Conversations between two users; archives and trash from the sender's side.
            models.Index(fields=["sender", "recipient", "sent_at"], name="pm_sender_idx"),
            models.Index(fields=["thread", "sent_at"], name="pm_thread_idx"),
            # The moderators' queue.
            models.Index(
                fields=["sent_at"], name="pm_pending_idx", condition=Q(moderation_status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sender_label}>{self.recipient_label}:{self.excerpt}"

    @property
    def excerpt(self) -> str:
        return Truncator(self.subject or self.body).chars(50)

    @property
    def sender_label(self) -> str:
        """The sender's username (``get_username()``, any user model), or the visitor's address."""
        return self.sender.get_username() if self.sender_id else self.email

    @property
    def recipient_label(self) -> str:
        return self.recipient.get_username() if self.recipient_id else self.email

    def is_pending(self) -> bool:
        return self.moderation_status == Status.PENDING

    def is_accepted(self) -> bool:
        return self.moderation_status == Status.ACCEPTED

    def is_rejected(self) -> bool:
        return self.moderation_status == Status.REJECTED

    @property
    def is_new(self) -> bool:
        return self.read_at is None

    @property
    def is_replied(self) -> bool:
        return self.replied_at is not None


class Block(models.Model):
    """``blocker`` accepts no private message from ``blocked``.

    Checked by :func:`dispatcher.inbox.exchange.refusal` for every message a
    user writes (pages, JSON API, ``pm_write``); the blocked user is told only
    that the recipient does not accept their messages.
    """

    blocker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox_blocks",
        db_index=False,  # led by the unique constraint
    )
    blocked = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="inbox_blocked_by",
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="inbox_block_once"),
            models.CheckConstraint(condition=~Q(blocker=models.F("blocked")), name="inbox_block_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker} blocks {self.blocked}"
