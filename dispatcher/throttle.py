"""Throttle by key: at most one message per key and address per period.

``schedule_messages(report, recipients("smtp", admins), throttle_key="errors",
throttle=timedelta(hours=3))``: the first call sends; calls within the next
three hours to the same address are written as SKIPPED dispatches (their
``result`` says which key held them back and until when), visible in the
admin, never sent. The period starts at the message that went.

The decision is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE until <= now``
per chunk of recipients, in the scheduling transaction: the database decides,
so two processes scheduling the same key at the same moment send one message
(the second waits for the first's row and sees it taken); a rolled-back
scheduling leaves no mark behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from .exceptions import InvalidArgument
from .models import Dispatch, Message, ThrottleMark
from .validation import has_control_characters

KEY_MAX_LENGTH: int = ThrottleMark._meta.get_field("key").max_length  # type: ignore[assignment]
#: Rows per statement (4 parameters each, well under SQLite's limit).
CHUNK = 2000


def check(key: Any, period: Any) -> None:
    """Both or neither; a key that fits its column; a positive timedelta."""
    if key is None and period is None:
        return
    if key is None or period is None:
        raise InvalidArgument("throttle_key and throttle go together: give both or neither")
    if not isinstance(key, str) or not key or has_control_characters(key):
        raise InvalidArgument("throttle_key must be a non-empty one-line string")
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidArgument(f"throttle_key is {len(key)} characters; at most {KEY_MAX_LENGTH} fit")
    if not isinstance(period, timedelta) or period <= timedelta(0):
        raise InvalidArgument("throttle must be a positive timedelta")


def claim(key: str, period: timedelta, targets: Sequence[Any], now: datetime) -> list[bool]:
    """For each ``(messenger, address, user)`` target: whether it may be sent
    now (and the key is taken for it until ``now + period``)."""
    table = connection.ops.quote_name(ThrottleMark._meta.db_table)
    q = connection.ops.quote_name
    until = now + period
    adapt = connection.ops.adapt_datetimefield_value  # as the ORM stores it (SQLite: naive UTC text)
    allowed: set[tuple[str, str]] = set()
    # Sorted: concurrent calls lock shared marks in one order, never in a cycle.
    unique = sorted({(t[0], t[1]) for t in targets})
    with connection.cursor() as cursor:
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start:start + CHUNK]
            values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
            params: list[Any] = []
            for messenger, address in chunk:
                params += [key, messenger, address, adapt(until)]
            cursor.execute(
                f"INSERT INTO {table} ({q('key')}, {q('messenger')}, {q('address')}, {q('until')}) "
                f"VALUES {values} "
                f"ON CONFLICT ({q('key')}, {q('messenger')}, {q('address')}) "
                f"DO UPDATE SET {q('until')} = excluded.{q('until')} WHERE {table}.{q('until')} <= %s "
                f"RETURNING {q('messenger')}, {q('address')}",
                [*params, adapt(now)],
            )
            allowed.update((m, a) for m, a in cursor.fetchall())
    return _decide(targets, allowed)


def _decide(targets: Sequence[Any], allowed: set[tuple[str, str]]) -> list[bool]:
    result = []
    for target in targets:
        pair = (target[0], target[1])
        result.append(pair in allowed)
        allowed.discard(pair)  # the same address twice in one call: the second is skipped
    return result


def write_message_and_claim(message: Message, key: str, period: timedelta, targets: Sequence[Any],
                            now: datetime) -> list[bool] | None:
    """PostgreSQL, up to :data:`CHUNK` addresses: insert ``message`` and take
    the key in **one** statement (the mark's INSERT is a data-modifying CTE of
    the message's), as :func:`claim` decides. Plain scheduling is BEGIN, the
    message, the dispatches, COMMIT; a separate mark statement was one round
    trip in four, +11 to 17 % per call in ``make bench ONLY=throttle`` against
    the 10 % the feature may cost. ``None`` where it does not apply (SQLite
    has no data-modifying CTE; more addresses take :func:`claim`'s chunks):
    the caller then saves the message and calls :func:`claim`."""
    unique = sorted({(t[0], t[1]) for t in targets})
    if connection.vendor != "postgresql" or not unique or len(unique) > CHUNK:
        return None
    q = connection.ops.quote_name
    marks = q(ThrottleMark._meta.db_table)
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    message_values = [f.get_db_prep_save(f.pre_save(message, True), connection) for f in fields]
    params: list[Any] = []
    for messenger, address in unique:
        params += [key, messenger, address, connection.ops.adapt_datetimefield_value(now + period)]
    sql = (
        f"WITH mark AS (INSERT INTO {marks} ({q('key')}, {q('messenger')}, {q('address')}, {q('until')}) "
        f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(unique))} "
        f"ON CONFLICT ({q('key')}, {q('messenger')}, {q('address')}) "
        f"DO UPDATE SET {q('until')} = excluded.{q('until')} WHERE {marks}.{q('until')} <= %s "
        f"RETURNING {q('messenger')}, {q('address')}) "
        f"INSERT INTO {q(Message._meta.db_table)} ({', '.join(q(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"RETURNING {q(Message._meta.pk.column)}, "
        f"ARRAY(SELECT json_build_array({q('messenger')}, {q('address')})::text FROM mark)"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, adapt(now), *message_values])
        pk, taken = cursor.fetchone()
    message.pk = pk
    message._state.adding = False
    message._state.db = connection.alias
    return _decide(targets, {tuple(json.loads(pair)) for pair in taken})


def skip(message: Message, targets: Sequence[Any], key: str, now: datetime) -> list[Dispatch]:
    """Write SKIPPED dispatches for the held-back targets, saying why."""
    if not targets:
        return []
    marks = {
        (m.messenger, m.address): m.until
        for m in ThrottleMark.objects.filter(key=key, address__in={t[1] for t in targets})
    }
    rows = []
    for messenger, address, user in targets:
        until = marks.get((messenger, address))
        rows.append(Dispatch(
            message=message, messenger=messenger, address=address, recipient=user,
            status=Dispatch.Status.SKIPPED, next_attempt_at=now, created=now,
            result={"skipped": "throttled", "throttle_key": key,
                    "until": until.isoformat() if until else None},
        ))
    return Dispatch.objects.bulk_create(rows)


def cleanup(now: datetime) -> int:
    """Forget marks whose period is over (they no longer hold anything back)."""
    return ThrottleMark.objects.filter(until__lt=now).delete()[0]
