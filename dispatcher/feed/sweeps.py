"""Old notifications go: read ones after ``DISPATCHER_FEED_KEEP_READ_DAYS``
(30), any after ``DISPATCHER_FEED_KEEP_DAYS`` (90).

Run hourly by the ``dispatcher.feed_cleanup`` periodic task (created after
``migrate``), or by ``manage.py feed_cleanup``. Rows go in chunks, so a
large backlog never holds one long transaction.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import Notification

DEFAULT_KEEP_DAYS = 90
DEFAULT_KEEP_READ_DAYS = 30
CHUNK = 5000


def expired(days: float | None = None, read_days: float | None = None) -> QuerySet[Notification]:
    if days is None:
        days = getattr(settings, "DISPATCHER_FEED_KEEP_DAYS", DEFAULT_KEEP_DAYS)
    if read_days is None:
        read_days = getattr(settings, "DISPATCHER_FEED_KEEP_READ_DAYS", DEFAULT_KEEP_READ_DAYS)
    now = timezone.now()
    too_old = Q(created__lt=now - timedelta(days=float(days)))
    read_long_ago = Q(read_at__lt=now - timedelta(days=float(read_days)))
    return Notification.objects.filter(too_old | read_long_ago)


def cleanup(days: float | None = None, read_days: float | None = None, dry_run: bool = False) -> int:
    """Delete expired notifications; returns how many (would) go."""
    queryset = expired(days, read_days)
    if dry_run:
        return queryset.count()
    total = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:CHUNK])
        if not ids:
            return total
        total += Notification.objects.filter(pk__in=ids).delete()[0]
