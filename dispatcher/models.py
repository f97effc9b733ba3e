"""Notification messages and their per-recipient dispatches.

The database is the source of truth: the broker only rings the bell. Every
state change of a dispatch is a conditional UPDATE, so two workers can never
both own one dispatch.
"""

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
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "dispatches"
        indexes = [
            # claim and requeue: status in (pending, error) and due
            models.Index(fields=["status", "next_attempt_at"], name="dispatch_due_idx"),
            # reclaim of expired leases
            models.Index(fields=["status", "lease_expires_at"], name="dispatch_lease_idx"),
            # cleanup of old sent rows, dashboards
            models.Index(fields=["status", "dispatched_at"], name="dispatch_sent_idx"),
            models.Index(fields=["messenger", "status"], name="dispatch_messenger_idx"),
            models.Index(fields=["claim_token"], name="dispatch_claim_idx"),
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
