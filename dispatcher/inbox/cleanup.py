"""Removal of private messages nobody keeps any more (``manage.py inbox_cleanup``)."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import PrivateMessage

CHUNK = 1000


def removable_q(days: int) -> Q:
    """Deleted on both sides at least ``days`` ago; a visitor's side counts as deleted."""
    cutoff = timezone.now() - timedelta(days=days)
    return (Q(sender__isnull=True) | Q(sender_deleted_at__lte=cutoff)) & (
        Q(recipient__isnull=True) | Q(recipient_deleted_at__lte=cutoff)
    )


def cleanup(days: int, dry_run: bool = False) -> int:
    """Delete what both sides deleted ``days`` ago or more; returns how many rows.

    A conversation goes only when every message of it qualifies, so a reply
    someone still keeps never loses its thread. Deletes in chunks of ids, each
    in its own transaction, so a large cleanup never holds long locks.
    """
    removable = removable_q(days)
    kept_threads = (
        PrivateMessage.objects.filter(thread__isnull=False).exclude(removable).values("thread_id")
    )
    qs = (
        PrivateMessage.objects.filter(removable)
        .exclude(thread__in=kept_threads)
        .exclude(pk__in=kept_threads)
        .order_by("pk")
    )
    if dry_run:
        return qs.count()
    total = 0
    while True:
        ids = list(qs.values_list("pk", flat=True)[:CHUNK])
        if not ids:
            return total
        with transaction.atomic():
            # Django sets parent/thread of any row still pointing here to NULL:
            # a thread split by the chunk boundary goes in the next chunk.
            deleted = PrivateMessage.objects.filter(pk__in=ids).delete()[1].get(
                PrivateMessage._meta.label, 0
            )
        total += deleted
