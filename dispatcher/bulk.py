"""Writing many dispatches fast.

A fan-out to 100,000 recipients is the hot path of scheduling. Django's
``bulk_create`` spends most of its time building model instances and SQL
parameters; on PostgreSQL we take the ids from the sequence in one query and
stream the rows with COPY, and build the returned instances without running
``Model.__init__`` per row. Other databases use ``bulk_create``.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models.base import ModelState

from .models import Dispatch, Message

COLUMNS = ("id", "message_id", "messenger", "recipient_id", "address", "status", "attempts",
           "next_attempt_at", "queued_at", "created")
BULK_BATCH_SIZE = 2000


def create_dispatches(
    message: Message,
    targets: Sequence[Any],
    due: datetime,
    queued_at: datetime | None,
    now: datetime,
) -> list[Dispatch]:
    """Insert one PENDING dispatch per ``(messenger, address, user)`` target."""
    if connection.vendor == "postgresql" and len(targets) > 50:
        return _copy(message, targets, due, queued_at, now)
    dispatches = [
        Dispatch(message=message, messenger=t[0], recipient=t[2], address=t[1],
                 next_attempt_at=due, queued_at=queued_at, created=now)
        for t in targets
    ]
    return Dispatch.objects.bulk_create(dispatches, batch_size=BULK_BATCH_SIZE)


def insert_dispatches(
    message: Message,
    targets: Sequence[Any],
    due: datetime,
    queued_at: datetime | None,
    now: datetime,
) -> int:
    """Insert the dispatches and return how many, building no objects: the
    writer of fan-outs too large to return (see :mod:`dispatcher.fanout`)."""
    if connection.vendor == "postgresql":
        return len(_copy_rows(message, targets, due, queued_at, now))
    Dispatch.objects.bulk_create(
        [Dispatch(message=message, messenger=t[0], recipient=t[2], address=t[1],
                  next_attempt_at=due, queued_at=queued_at, created=now) for t in targets],
        batch_size=BULK_BATCH_SIZE,
    )
    return len(targets)


def _copy(message: Message, targets: Sequence[Any], due: datetime, queued_at: datetime | None,
          now: datetime) -> list[Dispatch]:
    ids = _copy_rows(message, targets, due, queued_at, now)
    status = str(Dispatch.Status.PENDING)
    alias = connection.alias
    # 100,000 new objects would trigger the cyclic GC over and over while none
    # of them can be garbage yet: pause it while they are built.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [
            _instance(pk, message, messenger, address, user, status, due, queued_at, now, alias)
            for pk, (messenger, address, user) in zip(ids, targets, strict=True)
        ]
    finally:
        if gc_was_enabled:
            gc.enable()


def _copy_rows(message: Message, targets: Sequence[Any], due: datetime, queued_at: datetime | None,
               now: datetime) -> list[int]:
    """COPY the rows in; their ids, taken from the sequence in one query."""
    table = Dispatch._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(targets)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        status = str(Dispatch.Status.PENDING)
        columns = ", ".join(COLUMNS)
        # COPY's text format, written in chunks: much faster than write_row().
        fixed = "\t".join([status, "0", due.isoformat(),
                           queued_at.isoformat() if queued_at else "\\N", now.isoformat()])
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for start in range(0, len(ids), 10_000):
                copy.write("".join(
                    f"{pk}\t{message.pk}\t{_text(messenger)}\t"
                    f"{user.pk if user is not None else NULL}\t{_text(address)}\t{fixed}\n"
                    for pk, (messenger, address, user) in zip(
                        ids[start : start + 10_000], targets[start : start + 10_000], strict=True
                    )
                ))
    return ids


NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    """A value escaped for COPY's text format."""
    return value.translate(_ESCAPES)


def _instance(pk: int, message: Message, messenger: str, address: str, user: Any, status: str,
              due: datetime, queued_at: datetime | None, now: datetime, alias: str) -> Dispatch:
    """A saved Dispatch, as ``Model.from_db`` would make it, minus the per-row ``__init__``."""
    dispatch = Dispatch.__new__(Dispatch)
    state = ModelState.__new__(ModelState)
    cache = {"message": message}
    if user is not None:
        cache["recipient"] = user
    state.__dict__.update(adding=False, db=alias, fields_cache=cache)
    dispatch.__dict__.update(
        _state=state, id=pk, message_id=message.id, messenger=messenger,
        recipient_id=user.pk if user is not None else None, address=address, status=status,
        attempts=0, next_attempt_at=due, queued_at=queued_at, lease_expires_at=None,
        claim_token=None, dispatched_at=None, read_at=None, created=now,
    )
    return dispatch
