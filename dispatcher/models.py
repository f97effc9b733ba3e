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
from django.db.models.fields.json import KeyTextTransform
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
        #: Never sent, on purpose: a throttle key held it back (``Dispatch.result`` says which).
        SKIPPED = "skipped"

    #: States a worker may claim from (once due).
    CLAIMABLE = (Status.PENDING, Status.ERROR)

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="dispatches")
    messenger = models.CharField(max_length=50)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # a partial index below: most fan-outs go to bare addresses
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
        # On PostgreSQL the table is partitioned by RANGE (id), one partition a
        # month (dispatcher.partitions, migration 0006); every index below is
        # created on the partitioned table, so each month has its own.
        # Partial indexes where a query needs only some states: a new PENDING
        # row then updates fewer indexes, which is most of a fan-out's cost.
        indexes = [
            # requeue sweep: claimable rows whose task is lost (queued_at null
            # or old) and due; rows with a live task are skipped by the index
            # itself, so a backlog of millions costs the sweep nothing.
            models.Index(fields=["queued_at", "next_attempt_at"], name="dispatch_requeue_idx",
                         condition=models.Q(status__in=["pending", "error"])),
            # a user's dispatches (deleting a user sets them NULL): only rows that
            # have one, so an address's row pays no entry at insert, claim or outcome
            models.Index(fields=["recipient"], name="dispatch_recipient_idx",
                         condition=models.Q(recipient__isnull=False)),
            # what is due later, and the oldest due (dashboard, metrics, status):
            # read in next_attempt_at order without visiting the rows
            models.Index(fields=["next_attempt_at"], include=["messenger", "status"],
                         name="dispatch_waiting_idx", condition=models.Q(status__in=["pending", "error"])),
            # cleanup of old sent rows, throughput over time
            models.Index(fields=["dispatched_at"], name="dispatch_sent_idx",
                         condition=models.Q(status="sent")),
            # No index of leases or claim tokens: a batch finds its rows by
            # primary key, and the lease sweep reads the few processing rows
            # through (status, id). They cost two index entries a claim.
            # The admin's list filtered by status or by messenger, newest first:
            # each filter reads its own index backwards and stops after a page.
            # (Counts come from DispatchCounter, not from an index.)
            models.Index(fields=["status", "id"], name="dispatch_status_id_idx"),
            models.Index(fields=["messenger", "id"], name="dispatch_messenger_id_idx"),
            # the dashboard's latest failures: a few rows among millions sent
            models.Index(fields=["id"], name="dispatch_failures_idx",
                         condition=models.Q(status__in=["failed", "error"])),
            # the admin's exact search by address
            models.Index(fields=["address"], name="dispatch_address_idx"),
            # a provider's delivery receipt names the message by the id it gave
            # (Postmark's MessageID, Twilio's SID), kept in ``result``
            models.Index(KeyTextTransform("message_id", "result"), name="dispatch_result_message_id_idx",
                         condition=models.Q(result__isnull=False)),
            models.Index(KeyTextTransform("sid", "result"), name="dispatch_result_sid_idx",
                         condition=models.Q(result__isnull=False)),
            # skipped dispatches over time (dashboard chart); no other row is in it
            models.Index(fields=["created"], name="dispatch_skipped_idx",
                         condition=models.Q(status="skipped")),
        ]

    def __str__(self) -> str:
        return f"{self.messenger}:{self.address} ({self.status})"


class DispatchError(models.Model):
    """One failed attempt of a dispatch."""

    #: No foreign-key constraint in the database: on PostgreSQL both tables are
    #: partitioned by month (see :mod:`dispatcher.partitions`), an error row in
    #: the partition of its dispatch, and a month is retired with DROP TABLE,
    #: which a constraint would turn into a check of every row. Django still
    #: deletes the errors of a dispatch it deletes (on_delete runs in Python).
    dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="errors",
                                 db_constraint=False)
    attempt = models.PositiveIntegerField()
    error_class = models.CharField(max_length=200)
    text = models.TextField()
    permanent = models.BooleanField(default=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"attempt {self.attempt}: {self.error_class}"


class Suppression(models.Model):
    """An address no dispatch goes to: a dispatch to it is FAILED at once,
    with reason "suppressed", and never reaches its messenger.

    Per messenger kind (``"email"`` covers every e-mail messenger, smtp and
    postmark alike; other messengers are their own kind), put there by a hard
    bounce or a complaint (delivery receipts), a one-click unsubscribe from a
    type that asks for it, or by hand. ``message_type`` empty: every type;
    else only that type. See :mod:`dispatcher.suppression`.
    """

    class Reason(models.TextChoices):
        BOUNCE = "bounce"
        COMPLAINT = "complaint"
        UNSUBSCRIBE = "unsubscribe"
        MANUAL = "manual"

    kind = models.CharField(max_length=50)
    address = models.CharField(max_length=500)
    message_type = models.CharField(max_length=100, blank=True, default="")
    reason = models.CharField(max_length=20, choices=Reason.choices, default=Reason.MANUAL)
    detail = models.TextField(blank=True, default="")
    #: The dispatch whose bounce, complaint or unsubscribe put the address here.
    dispatch = models.ForeignKey(Dispatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 db_constraint=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "address", "message_type"], name="suppression_unique"),
        ]

    def __str__(self) -> str:
        scope = f" ({self.message_type})" if self.message_type else ""
        return f"{self.kind}:{self.address}{scope}: {self.reason}"


class DeliveryReceipt(models.Model):
    """What a provider reported about a dispatch after accepting it: delivered,
    bounced or complained (see :mod:`dispatcher.receipts`). One of each event
    per dispatch: a provider's retried webhook records nothing twice."""

    class Event(models.TextChoices):
        DELIVERED = "delivered"
        BOUNCED = "bounced"
        COMPLAINED = "complained"

    dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="receipts",
                                 db_constraint=False)
    event = models.CharField(max_length=20, choices=Event.choices)
    #: Who reported it: "postmark", "twilio", "dsn" (a bounce mail).
    provider = models.CharField(max_length=30)
    #: When it happened, by the provider's clock.
    occurred_at = models.DateTimeField()
    reason = models.TextField(blank=True, default="")
    #: A hard bounce (the address will not work again) or a complaint.
    permanent = models.BooleanField(default=False)
    payload = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["dispatch", "event"], name="receipt_once_per_event")]
        indexes = [models.Index(fields=["created", "event"], name="receipt_created_idx")]

    def __str__(self) -> str:
        return f"dispatch {self.dispatch_id} {self.event} ({self.provider})"


class FallbackHop(models.Model):
    """A dispatch's place in its recipient's chain of channels (telegram, then
    smtp...): when the dispatch FAILS, the next hop is scheduled once, in the
    same transaction (see :mod:`dispatcher.fallback`)."""

    dispatch = models.OneToOneField(Dispatch, on_delete=models.CASCADE, related_name="fallback",
                                    primary_key=True, db_constraint=False)
    #: Every hop, in order: {"messenger", "address", and "skipped" with the reason
    #: for a hop that could not be used (no address, the type cannot go there)}.
    chain = models.JSONField(default=list)
    #: This dispatch's hop in ``chain``.
    position = models.PositiveSmallIntegerField(default=0)
    previous = models.ForeignKey(Dispatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 db_constraint=False)
    #: The dispatch of the next hop, once this one failed.
    next = models.ForeignKey(Dispatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                             db_constraint=False)
    fell_back_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["fell_back_at"], name="fallback_fell_back_idx",
                                condition=models.Q(fell_back_at__isnull=False))]

    def __str__(self) -> str:
        hops = " -> ".join(str(h.get("messenger")) for h in self.chain)
        return f"dispatch {self.dispatch_id}: hop {self.position + 1} of {hops}"


class ChannelPreference(models.Model):
    """A user's preferred order of channels (``["telegram", "smtp"]``), for
    one message type or (``message_type`` empty) for every type: what
    ``fallback_chain(user)`` follows."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message_type = models.CharField(max_length=100, blank=True, default="")
    channels = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "message_type"], name="channel_preference_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user}: {' -> '.join(self.channels)} ({self.message_type or 'every type'})"


class ThrottleMark(models.Model):
    """Until when a throttle key holds back further messages to one address
    (see :mod:`dispatcher.throttle`)."""

    key = models.CharField(max_length=200)
    messenger = models.CharField(max_length=50)
    address = models.CharField(max_length=500)
    until = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "messenger", "address"], name="throttle_unique"),
        ]
        indexes = [models.Index(fields=["until"], name="throttle_until_idx")]

    def __str__(self) -> str:
        return f"{self.key} {self.messenger}:{self.address} until {self.until}"


class DigestWindow(models.Model):
    """The notifications of one digest type to one address while a window is
    open; closed (into one Message and Dispatch) by the digest sweep once
    ``closes_at`` has passed (see :mod:`dispatcher.digests`)."""

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    message_type = models.CharField(max_length=100)
    messenger = models.CharField(max_length=50)
    address = models.CharField(max_length=500)
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    opened_at = models.DateTimeField(default=timezone.now)
    closes_at = models.DateTimeField()
    item_count = models.PositiveIntegerField(default=0)
    closed_at = models.DateTimeField(null=True, blank=True)
    #: The digest, once the window closed.
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    dispatch = models.ForeignKey(Dispatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 db_constraint=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One open window per type and address, whoever writes at the same time.
            models.UniqueConstraint(fields=["message_type", "messenger", "address"],
                                    condition=models.Q(status="open"), name="digest_one_open_window"),
        ]
        indexes = [
            models.Index(fields=["closes_at"], name="digest_due_idx", condition=models.Q(status="open")),
        ]

    def __str__(self) -> str:
        return (f"{self.message_type} to {self.messenger}:{self.address} "
                f"({self.status}, {self.item_count} items)")


class DigestItem(models.Model):
    """One notification collected into a digest window."""

    window = models.ForeignKey(DigestWindow, on_delete=models.CASCADE, related_name="items")
    context = models.JSONField(default=dict)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["created"], name="digest_item_created_idx")]

    def __str__(self) -> str:
        return f"item {self.pk} of window {self.window_id}"


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


class DispatchCounter(models.Model):
    """How many dispatches (and failed attempts) there are per messenger, status
    and day, so the dashboard, the metrics, ``dispatcher_status`` and the admin
    never count the history row by row (see :mod:`dispatcher.counters`).

    Written by database triggers on ``dispatcher_dispatch`` and
    ``dispatcher_dispatcherror``, in the transaction of the change itself,
    whoever makes it (the engine, the admin, a site's own queryset update, a
    shell). A key may have several rows, each a delta: concurrent transactions
    append rather than update one hot row, so they never wait on each other or
    deadlock; a count is the ``SUM(n)`` of its rows, and
    :func:`dispatcher.counters.compact` folds them together from time to time.
    """

    class Kind(models.TextChoices):
        #: Dispatch rows; ``status`` is the dispatch's status.
        DISPATCH = "dispatch"
        #: DispatchError rows (failed attempts); ``status`` is "temporary" or "permanent".
        ERROR = "error"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    messenger = models.CharField(max_length=50)
    status = models.CharField(max_length=20)
    #: The UTC day the dispatch (or the error row) was created.
    day = models.DateField()
    n = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["kind", "messenger", "status", "day"],
                                name="dispatch_counter_key_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.messenger}/{self.status} {self.day}: {self.n:+d}"
