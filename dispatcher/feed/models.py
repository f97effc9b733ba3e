"""The in-app feed: notifications delivered into a user's own list on the site.

Distinct from private messages (what users write to each other) and from
``dispatcher.models.Message`` (a notification on its way through any
messenger): a :class:`Notification` is what the ``inapp`` messenger
delivered, kept for the user to read on the site.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

SUBJECT_MAX_LENGTH = 255
URL_MAX_LENGTH = 500


class NotificationQuerySet(models.QuerySet):
    def for_user(self, user: object) -> NotificationQuerySet:
        return self.filter(recipient=getattr(user, "pk", user))

    def unread_count(self, user: object) -> int:
        """The bell's number: one COUNT on the partial index of unread rows."""
        return self.for_user(user).filter(read_at__isnull=True).count()


class Notification(models.Model):
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feed_notifications",
        db_index=False,  # led by feed_list_idx
    )
    #: The dispatch that delivered it: a retried delivery never adds a second row.
    #: Not a foreign key: dispatch history is cleaned up on its own schedule.
    dispatch_id = models.BigIntegerField(null=True, blank=True, unique=True)
    message_type = models.CharField(max_length=100, blank=True)
    subject = models.CharField(max_length=SUBJECT_MAX_LENGTH, blank=True)
    text = models.TextField(blank=True)
    #: Where the notification leads (the message's ``url`` context), if anywhere.
    url = models.CharField(max_length=URL_MAX_LENGTH, blank=True)
    created = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            # The feed page and the JSON list: one user's, newest first.
            models.Index(fields=["recipient", "-created", "-id"], name="feed_list_idx"),
            # The bell, polled often: a small partial index of unread rows.
            models.Index(fields=["recipient"], name="feed_unread_idx", condition=Q(read_at__isnull=True)),
            # The cleanup sweep.
            models.Index(fields=["created"], name="feed_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.recipient_id}: {self.subject or self.text[:50]}"

    @property
    def is_unread(self) -> bool:
        return self.read_at is None
