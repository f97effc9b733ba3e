"""Digests: many notifications of one type to one recipient become one dispatch.

A message type declares its window::

    class CommentNotice(MessageBase):
        alias = "comment"
        digest = timedelta(minutes=30)          # or: digest_at = time(9, 0) (daily, user's time zone)
        digest_template = "comments/digest.txt" # gets {{ items }} (each item's context) and {{ count }}

``schedule_messages(CommentNotice({...}), recipients("smtp", user))`` then
writes no dispatch: the notification is appended, as a
:class:`~dispatcher.models.DigestItem`, to the recipient's open
:class:`~dispatcher.models.DigestWindow` of that type (opened by the first
notification; it closes ``digest`` later, or at the next ``digest_at`` in
the recipient's time zone). The digest sweep (:func:`close_due`, run by beat)
turns each closed window into one Message (context ``items``, ``count``) and
one Dispatch, published on commit.

Exactly one digest per window, whatever runs at the same time:

- one open window per (type, messenger, address), by a partial unique index;
  producers take it with one ``INSERT ... ON CONFLICT DO UPDATE`` that also
  locks it until their transaction ends, and append their item in that same
  transaction;
- the sweep takes due windows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a
  window a producer is appending to is left for the next run), reads their
  items and writes the digests and the windows' ``closed`` state in one
  transaction. A worker killed in the middle writes nothing: the windows are
  still open and due, and the next run closes them. A producer whose window
  closed meanwhile finds no open window and opens the next one.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from .exceptions import InvalidArgument, UnknownMessageType
from .messages import UNSUBSCRIBABLE, MessageBase
from .models import DigestItem, DigestWindow, Dispatch, Message
from .publish import publish
from .registry import get_registered_message_type

#: Windows a sweep closes per transaction.
CHUNK = 500
#: Recipients per upsert statement (8 parameters each).
UPSERT_CHUNK = 2000


def is_digest(message_cls: Any) -> bool:
    """Whether a message type (class or instance) collects into digests."""
    cls = message_cls if isinstance(message_cls, type) else type(message_cls)
    return bool(getattr(cls, "digest", None) or getattr(cls, "digest_at", None))


def check_type(message_cls: type[MessageBase]) -> None:
    interval = getattr(message_cls, "digest", None)
    at = getattr(message_cls, "digest_at", None)
    if at is not None and not isinstance(at, time):
        raise InvalidArgument(f"{message_cls.__name__}.digest_at must be a datetime.time")
    if at is None and not (isinstance(interval, timedelta) and interval > timedelta(0)):
        raise InvalidArgument(f"{message_cls.__name__}.digest must be a positive timedelta")


def time_zone_of(message_cls: type[MessageBase], user: Any) -> tzinfo:
    """The recipient's time zone for a daily digest: the type's
    ``digest_timezone(user)`` if it has one, else the user's ``timezone``
    attribute (a name or a tzinfo), else ``settings.TIME_ZONE``."""
    chooser = getattr(message_cls, "digest_timezone", None)
    zone = chooser(user) if callable(chooser) else getattr(user, "timezone", None)
    if isinstance(zone, tzinfo):
        return zone
    try:
        return zoneinfo.ZoneInfo(str(zone or settings.TIME_ZONE or "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo(settings.TIME_ZONE or "UTC")


def closes_at(message_cls: type[MessageBase], user: Any, now: datetime) -> datetime:
    """When a window opened ``now`` closes."""
    at = getattr(message_cls, "digest_at", None)
    if at is None:
        return now + message_cls.digest  # type: ignore[attr-defined, no-any-return]
    zone = time_zone_of(message_cls, user)
    local = now.astimezone(zone)
    for days in range(0, 3):
        candidate = datetime.combine(local.date() + timedelta(days=days), at, tzinfo=zone)
        # A time skipped by a DST change is read as the moment after the gap.
        if candidate > local:
            return candidate.astimezone(UTC)
    raise AssertionError("unreachable: a daily time comes within two days")


def collect(message: MessageBase, targets: Sequence[Any], now: datetime | None = None) -> list[DigestWindow]:
    """Append ``message`` to each target's open window (opening it if needed);
    returns the windows. One statement for the windows (per 2,000 targets)
    and one for the items, in one transaction."""
    cls = type(message)
    check_type(cls)
    now = now or timezone.now()
    # Sorted: concurrent producers lock shared windows in one order, never in a cycle.
    unique = sorted({(t[0], t[1]): t for t in targets}.values(), key=lambda t: (t[0], t[1]))
    table = DigestWindow._meta.db_table
    q = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    columns = ("message_type", "messenger", "address", "recipient_id", "status", "opened_at", "closes_at",
               "item_count")
    ids: dict[tuple[str, str], int] = {}
    context = dict(message.context)
    with transaction.atomic():
        with connection.cursor() as cursor:
            for start in range(0, len(unique), UPSERT_CHUNK):
                chunk = unique[start:start + UPSERT_CHUNK]
                params: list[Any] = []
                for messenger, address, user in chunk:
                    params += [cls.alias, messenger, address, user.pk if user is not None else None,
                               DigestWindow.Status.OPEN, adapt(now), adapt(closes_at(cls, user, now)), 1]
                cursor.execute(
                    f"INSERT INTO {q(table)} ({', '.join(q(c) for c in columns)}) "
                    f"VALUES {', '.join(['(' + ', '.join(['%s'] * len(columns)) + ')'] * len(chunk))} "
                    f"ON CONFLICT ({q('message_type')}, {q('messenger')}, {q('address')}) "
                    f"WHERE {q('status')} = 'open' "
                    f"DO UPDATE SET {q('item_count')} = {q(table)}.{q('item_count')} + 1 "
                    f"RETURNING {q('id')}, {q('messenger')}, {q('address')}",
                    params,
                )
                ids.update({(m, a): pk for pk, m, a in cursor.fetchall()})
        DigestItem.objects.bulk_create(
            [DigestItem(window_id=ids[(t[0], t[1])], context=context, created=now) for t in unique],
            batch_size=5000,
        )
    return list(DigestWindow.objects.filter(pk__in=list(ids.values())).order_by("id"))


def digest_context(message_cls: type[MessageBase] | None, items: list[dict[str, Any]],
                   window: DigestWindow, now: datetime) -> dict[str, Any]:
    """The digest message's context: ``items`` (each notification's context,
    oldest first) and ``count``; the type's ``digest_template`` (and
    ``digest_html_template``) render it. Without a template, the text is the
    items' texts, one per line, and the subject says how many there are.
    A type may shape it further with a ``digest_context(context, window)``
    classmethod returning the context to store."""
    count = len(items)
    context: dict[str, Any] = {
        "items": items, "count": count,
        "opened_at": window.opened_at.isoformat(), "closed_at": now.isoformat(),
    }
    if any(item.get(UNSUBSCRIBABLE) for item in items):
        context[UNSUBSCRIBABLE] = True
    template = getattr(message_cls, "digest_template", None)
    html_template = getattr(message_cls, "digest_html_template", None)
    if template:
        context["_template"] = template
    if html_template:
        context["_html_template"] = html_template
    if not template:
        context["text"] = "\n".join(str(i.get("text") or i.get("subject") or "") for i in items)
    first = next((str(i["subject"]) for i in items if i.get("subject")), None)
    title = getattr(message_cls, "title", "") or window.message_type
    if count == 1 and first:
        context["subject"] = first
    else:
        context["subject"] = f"{count} notifications: {title}" if count != 1 else title
    shape = getattr(message_cls, "digest_context", None)
    if callable(shape):
        context = shape(context, window)
    return context


def close_due(now: datetime | None = None, chunk: int = CHUNK, limit: int = 1_000_000) -> int:
    """Turn every open window due at ``now`` (default: now) into its digest;
    returns how many closed.

    Each chunk is one transaction: take the due windows no producer holds,
    write one Message and one Dispatch per window, mark the windows closed.
    Run it as often as digests should be punctual (beat runs it every
    ``DISPATCHER_SWEEP_INTERVAL`` seconds); any number of runs may overlap.
    """
    total = 0
    while total < limit:
        current = now or timezone.now()
        with transaction.atomic():
            ids = list(
                DigestWindow.objects.select_for_update(skip_locked=True)
                .filter(status=DigestWindow.Status.OPEN, closes_at__lte=current)
                .order_by("closes_at").values_list("pk", flat=True)[:chunk]
            )
            if not ids:
                break
            windows = list(DigestWindow.objects.filter(pk__in=ids, status=DigestWindow.Status.OPEN)
                           .order_by("id"))
            _close(windows, timezone.now())
        total += len(windows)
    return total


def _close(windows: list[DigestWindow], now: datetime) -> None:
    items: dict[int, list[dict[str, Any]]] = {w.pk: [] for w in windows}
    for window_id, context in (DigestItem.objects.filter(window_id__in=list(items))
                               .order_by("id").values_list("window_id", "context")):
        items[window_id].append(context)
    types: dict[str, type[MessageBase] | None] = {}
    for window in windows:
        if window.message_type not in types:
            try:
                types[window.message_type] = get_registered_message_type(window.message_type)
            except UnknownMessageType:
                types[window.message_type] = None  # delivered as FAILED (unknown type), not lost
    messages = Message.objects.bulk_create([
        Message(message_type=w.message_type, created=now,
                context=digest_context(types[w.message_type], items[w.pk], w, now),
                priority=getattr(types[w.message_type], "priority", 0))
        for w in windows
    ])
    dispatches = Dispatch.objects.bulk_create([
        Dispatch(message=m, messenger=w.messenger, address=w.address, recipient_id=w.recipient_id,
                 next_attempt_at=now, queued_at=now, created=now)
        for w, m in zip(windows, messages, strict=True)
    ])
    pks = [w.pk for w in windows]
    DigestWindow.objects.filter(pk__in=pks).update(
        status=DigestWindow.Status.CLOSED, closed_at=now,
        message_id=Case(*[When(pk=w.pk, then=Value(m.pk)) for w, m in zip(windows, messages, strict=True)],
                        output_field=IntegerField()),
        dispatch_id=Case(*[When(pk=w.pk, then=Value(d.pk)) for w, d in zip(windows, dispatches, strict=True)],
                         output_field=IntegerField()),
        item_count=Case(*[When(pk=w.pk, then=Value(len(items[w.pk]))) for w in windows],
                        output_field=IntegerField()),
    )
    by_priority: dict[int, list[tuple[str, int]]] = {}
    for message, dispatch in zip(messages, dispatches, strict=True):
        by_priority.setdefault(message.priority, []).append((dispatch.messenger, dispatch.pk))
    for level, pairs in sorted(by_priority.items(), reverse=True):
        transaction.on_commit(lambda pairs=pairs, level=level: publish(pairs, priority=level))
