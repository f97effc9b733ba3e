"""Periodic sweeps that bring back what was lost, stuck or is due again.

Each one works in bounded chunks, so a backlog of millions of rows never
loads at once. They run from beat (see ``dispatcher.beat``) and as
management commands.
"""

from __future__ import annotations

import logging
import operator
from datetime import timedelta
from functools import reduce

from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import counters, partitions
from .delivery import backoff_delay
from .exceptions import BrokerUnavailable
from .models import Dispatch, DispatchError, Message
from .publish import publish
from .registry import get_registered_message_types

logger = logging.getLogger("dispatcher.sweeps")

CHUNK = 1000


def requeue_due(limit: int = 100_000) -> int:
    """Publish due pending/error dispatches that no live task holds.

    A row counts as held while its ``queued_at`` is younger than
    DISPATCHER_REQUEUE_AFTER; older ones (the broker lost the task, or a retry
    became due) are published again. A duplicate task is harmless: only one
    claim can win.

    Each row is looked at once per run. When the broker cannot be reached the
    run stops at once and raises :class:`BrokerUnavailable` (the rows keep
    waiting, marked as not queued); the count is of rows actually published.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.DISPATCHER_REQUEUE_AFTER)
    total = 0
    published: list[int] = []

    def publish_chunk(rows: list[tuple[str, int, int]]) -> None:
        by_priority: dict[int, list[tuple[str, int]]] = {}
        for alias, pk, level in rows:
            by_priority.setdefault(level, []).append((alias, pk))
        try:
            for level, pairs in sorted(by_priority.items(), reverse=True):
                publish(pairs, strict=True, priority=level)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"{exc}; {sum(published)} requeued before that", sum(published)) from exc
        published.append(len(rows))

    while total < limit:
        with transaction.atomic():
            rows = list(
                Dispatch.objects.filter(status__in=Dispatch.CLAIMABLE, next_attempt_at__lte=now)
                .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=stale))
                .order_by("next_attempt_at")
                .values_list("messenger", "pk", "message__priority")[: min(CHUNK * 10, limit - total)]
            )
            if not rows:
                break
            # queued_at = now: the next query of this run no longer matches them.
            Dispatch.objects.filter(pk__in=[pk for _, pk, _ in rows]).update(queued_at=now)
            transaction.on_commit(lambda rows=rows: publish_chunk(rows), robust=False)
        total += len(rows)
    if total:
        logger.info("requeued %d due dispatches", total)
    return total


def reclaim_expired_leases() -> int:
    """Return PROCESSING rows whose lease expired (their worker died) to ERROR.

    The attempt counts; a row out of attempts becomes FAILED.
    """
    now = timezone.now()
    limits = {alias: cls.get_retry_limit() for alias, cls in get_registered_message_types().items()}
    total = 0
    expired = Dispatch.objects.filter(status=Dispatch.Status.PROCESSING, lease_expires_at__lt=now)
    while True:
        released = {"lease_expires_at": None, "claim_token": None, "queued_at": None}
        with transaction.atomic():
            # Locked rows are the ones this run takes back, so an error row is
            # written for each row actually reclaimed and for no other.
            rows = list(
                expired.select_for_update(skip_locked=True, of=("self",))
                .values_list("pk", "attempts", "message__message_type")[:CHUNK]
            )
            if not rows:
                break
            exhausted = {pk for pk, att, mt in rows if att >= limits.get(mt, settings.DISPATCHER_RETRY_LIMIT)}
            again = [pk for pk, _, _ in rows if pk not in exhausted]
            done_failed = expired.filter(pk__in=exhausted).update(status=Dispatch.Status.FAILED, **released)
            delay = timedelta(seconds=backoff_delay(1))
            done_again = expired.filter(pk__in=again).update(
                status=Dispatch.Status.ERROR, next_attempt_at=now + delay, **released
            )
            DispatchError.objects.bulk_create(
                [
                    DispatchError(
                        dispatch_id=pk, attempt=att, error_class="LeaseExpired",
                        text="the lease expired before an outcome was written: the worker holding "
                             "this dispatch stopped, or could not reach the database, for the whole lease",
                        permanent=pk in exhausted, created=now,
                    )
                    for pk, att, _ in rows
                ]
            )
        total += done_failed + done_again
    if total:
        logger.warning("reclaimed %d dispatches with expired leases", total)
    return total


def cleanup_sent(days: int | None = None, chunk: int = CHUNK) -> int:
    """Delete SENT dispatches older than ``days`` (and messages left empty), in chunks.

    On SQLite this is the retention. On a partitioned PostgreSQL database
    whole months go with :func:`maintain_partitions` (a DROP, not a DELETE per
    row), so this leaves alone the rows of the months that will be dropped
    whole, and deletes only where no drop will: in a month kept because it
    still holds an unfinished dispatch, and in the default partition.
    """
    days = settings.DISPATCHER_CLEANUP_DAYS if days is None else days
    cutoff = timezone.now() - timedelta(days=days)
    old = Dispatch.objects.filter(status=Dispatch.Status.SENT, dispatched_at__lt=cutoff)
    span = partitions.dropped_whole(cutoff)
    if span is not None:
        lo, hi = span
        # Ranges the planner prunes partitions by: those months are not even looked at.
        outside = []
        if lo is not None:
            outside.append(Q(pk__lt=lo))
        if hi is not None:
            outside.append(Q(pk__gte=hi))
        old = old.filter(reduce(operator.or_, outside)) if outside else old.none()
    total = 0
    while True:
        ids = list(old.values_list("pk", flat=True)[:chunk])
        if not ids:
            break
        Dispatch.objects.filter(pk__in=ids).delete()
        total += len(ids)
    while True:
        empty = list(
            Message.objects.filter(created__lt=cutoff, dispatches__isnull=True)
            .values_list("pk", flat=True)[:chunk]
        )
        if not empty:
            break
        Message.objects.filter(pk__in=empty).delete()
    return total


def maintain_partitions(days: int | None = None) -> partitions.Report:
    """On a partitioned PostgreSQL database: create the coming months'
    partitions, start the current month's ids, and drop the months whose whole
    range is older than ``days`` (DISPATCHER_CLEANUP_DAYS) and which hold no
    unfinished dispatch (those are kept and reported). Elsewhere nothing.

    Raises :class:`dispatcher.partitions.PartitionMaintenanceError` when a
    step failed (after doing the others)."""
    return partitions.maintain(days=days)


def compact_counters() -> int:
    """Fold the counters' delta rows (see :mod:`dispatcher.counters`): reads
    of the dashboard and the metrics then sum a few thousand rows at most.
    Returns the rows removed."""
    return counters.compact()


def reconcile_counters() -> int:
    """Compare the counters with a real count of the tables and correct them
    (a full scan: daily). Returns how many keys were off, which should be 0:
    anything else is logged as a warning with the keys and corrections."""
    return len(counters.reconcile().corrections)


def report_undelivered(hours: int = 24) -> int:
    """Mail ADMINS a summary of dispatches that FAILED in the last ``hours``.

    Returns how many failed. Nothing is mailed when none did.
    """
    since = timezone.now() - timedelta(hours=hours)
    failed = Dispatch.objects.filter(status=Dispatch.Status.FAILED, errors__created__gte=since).distinct()
    counts = list(failed.values("messenger").annotate(n=Count("pk", distinct=True)).order_by("messenger"))
    total = sum(row["n"] for row in counts)
    if not total:
        return 0
    lines = [f"{total} dispatches failed in the last {hours} hours.", ""]
    lines += [f"  {row['messenger']}: {row['n']}" for row in counts]
    lines += ["", "Latest reasons:"]
    for error in (
        DispatchError.objects.filter(permanent=True, created__gte=since)
        .select_related("dispatch")
        .order_by("-created")[:20]
    ):
        d = error.dispatch
        lines.append(f"  #{d.pk} {d.messenger}:{d.address} attempt {error.attempt}: {error.text[:200]}")
    mail_admins(f"{total} undelivered dispatches", "\n".join(lines), fail_silently=False)
    return total
