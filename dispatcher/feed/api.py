"""The feed from code: what the pages and the JSON API do, for one user each.

Every function takes the user and touches only that user's notifications:
an id of someone else's is simply not found.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from .models import Notification


def feed(user: Any, unread: bool = False) -> Any:
    """The user's notifications, newest first."""
    queryset = Notification.objects.for_user(user)
    return queryset.filter(read_at__isnull=True) if unread else queryset


def unread_count(user: Any) -> int:
    return Notification.objects.unread_count(user)


def mark_read(user: Any, ids: Iterable[int]) -> int:
    """Mark some of the user's notifications read; returns how many changed."""
    return feed(user, unread=True).filter(pk__in=list(ids)).update(read_at=timezone.now())


def mark_unread(user: Any, ids: Iterable[int]) -> int:
    return feed(user).filter(pk__in=list(ids), read_at__isnull=False).update(read_at=None)


def mark_all_read(user: Any) -> int:
    return feed(user, unread=True).update(read_at=timezone.now())


def delete(user: Any, ids: Iterable[int]) -> int:
    return int(feed(user).filter(pk__in=list(ids)).delete()[0])
