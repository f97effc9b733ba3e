"""Notification messages and their per-recipient dispatches.

The database is the source of truth: the broker only rings the bell. Every
state change of a dispatch is a conditional UPDATE, so two workers can never
both own one dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone


class Message(models.Model):
    message_type = models.CharField(max_length=100, db_index=True)
    context = models.JSONField(default=dict, blank=True)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    priority = models.SmallIntegerField(default=0)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.message_type} #{self.pk}"


class Dispatch(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        SENT = "sent"
        ERROR = "error"
        FAILED = "failed"
        CANCELLED = "cancelled"

    #: States a worker may claim from (once due).
    CLAIMABLE = (Status.PENDING, Status.ERROR)

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="dispatches")
    messenger = models.CharField(max_length=50)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    address = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    #: When a deliver task was last published for this row (None: never, or
    #: needs one again). The requeue sweep republishes rows whose task is lost.
    queued_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    #: What the messenger reported with the last outcome: the provider's ids
    #: (tweet id, Twilio SID, Postmark MessageID, Telegram message ids) and,
    #: after a partial failure, what a retry needs to resume without repeating.
    result = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "dispatches"
        # Partial indexes where a query needs only some states: a new PENDING
        # row then updates fewer indexes, which is most of a fan-out's cost.
        indexes = [
            # requeue sweep: claimable rows whose task is lost (queued_at null
            # or old) and due; rows with a live task are skipped by the index
            # itself, so a backlog of millions costs the sweep nothing.
            models.Index(fields=["queued_at", "next_attempt_at"], name="dispatch_requeue_idx",
                         condition=models.Q(status__in=["pending", "error"])),
            # lease sweep
            models.Index(fields=["lease_expires_at"], name="dispatch_lease_idx",
                         condition=models.Q(status="processing")),
            # cleanup of old sent rows, throughput over time
            models.Index(fields=["dispatched_at"], name="dispatch_sent_idx",
                         condition=models.Q(status="sent")),
            # the rows a worker won
            models.Index(fields=["claim_token"], name="dispatch_claim_idx",
                         condition=models.Q(claim_token__isnull=False)),
            # counts by messenger and status (admin filters, dashboard)
            models.Index(fields=["messenger", "status"], name="dispatch_messenger_idx"),
            # the admin's exact search by address
            models.Index(fields=["address"], name="dispatch_address_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.messenger}:{self.address} ({self.status})"


class DispatchError(models.Model):
    """One failed attempt of a dispatch."""

    dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="errors")
    attempt = models.PositiveIntegerField()
    error_class = models.CharField(max_length=200)
    text = models.TextField()
    permanent = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"attempt {self.attempt}: {self.error_class}"


class Subscription(models.Model):
    """A user (or a raw address) receives a message type through a messenger."""

    message_type = models.CharField(max_length=100)
    messenger = models.CharField(max_length=50)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    address = models.CharField(max_length=500, blank=True, default="")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message_type", "messenger", "recipient"],
                condition=models.Q(recipient__isnull=False),
                name="subscription_unique_user",
            ),
            models.UniqueConstraint(
                fields=["message_type", "messenger", "address"],
                condition=models.Q(recipient__isnull=True),
                name="subscription_unique_address",
            ),
            models.CheckConstraint(
                condition=models.Q(recipient__isnull=False) | ~models.Q(address=""),
                name="subscription_has_recipient",
            ),
        ]
        indexes = [models.Index(fields=["message_type", "messenger"], name="subscription_type_idx")]

    def __str__(self) -> str:
        return f"{self.recipient or self.address} <- {self.message_type} via {self.messenger}"


class ModelEventSubscription(models.Model):
    """Notify a user or an address when objects of a model are created, edited or deleted."""

    class Action(models.TextChoices):
        CREATE = "create"
        EDIT = "edit"
        DELETE = "delete"

    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.CASCADE)
    action = models.CharField(max_length=10, choices=Action.choices)
    #: None: every object of the model, current and future.
    object_id = models.CharField(max_length=64, null=True, blank=True)
    #: {field: value}: the event fires only when every field matches.
    filters = models.JSONField(default=dict, blank=True)
    messenger = models.CharField(max_length=50, default="smtp")
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    address = models.CharField(max_length=500, blank=True, default="")
    subject_template = models.CharField(max_length=500, blank=True, default="")
    body_template = models.TextField(blank=True, default="")
    active = models.BooleanField(default=True)
    fired_count = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["content_type", "action", "active"], name="model_event_lookup_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(recipient__isnull=False) | ~models.Q(address=""),
                name="model_event_has_recipient",
            ),
        ]

    def __str__(self) -> str:
        target = f"#{self.object_id}" if self.object_id else "all"
        return f"{self.recipient or self.address}: {self.action} {self.content_type} {target}"

    #: Checks that ``clean()`` (so every save, and the admin's form) runs.
    #: ``dispatcher.model_events`` adds its own when it loads: the model does
    #: not import the app built on it.
    validators: ClassVar[list[Callable[[ModelEventSubscription], None]]] = []

    def save(self, *args, **kwargs) -> None:  # type: ignore[override]
        self.clean()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        for validate in self.validators:
            validate(self)


class FlowCounter(models.Model):
    """Shared flow-control state on the database (the embedded profile, or
    any site whose broker is not Redis): a rate limiter's theoretical arrival
    time, a daily count, a pause, a circuit's fields. One row per key, read
    and written under a row lock by :mod:`dispatcher.limiter`; with Redis,
    the same state lives in Redis keys instead and this table stays empty."""

    key = models.CharField(max_length=255, primary_key=True)
    value = models.FloatField(default=0)
    #: Unix time in milliseconds after which the row means nothing (None: never).
    expires = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires"], name="flowcounter_expires_idx")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"
