"""Writing many dispatches fast.

A fan-out to 100,000 recipients is the hot path of scheduling. Django's
``bulk_create`` spends most of its time building model instances and SQL
parameters; on PostgreSQL we take the ids from the sequence in one query and
stream the rows with COPY, and build the returned instances without running
``Model.__init__`` per row. Other databases use ``bulk_create``.

A worker's batch is the hot path of delivery: on PostgreSQL its claim is one
``UPDATE ... RETURNING`` (the rows won come back with the claim, no second
query to read them), and each flush of outcomes is one ``UPDATE ... FROM
unnest(...)`` whatever the mix of outcomes, both with their values bound as
arrays (server-side binding: the statement's text is the same for every
batch, whatever its ids). :mod:`dispatcher.delivery` uses the ORM elsewhere.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
from django.conf import settings
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
    return _bulk_create(message, targets, due, queued_at, now)


def _bulk_create(message: Message, targets: Sequence[Any], due: datetime, queued_at: datetime | None,
                 now: datetime) -> list[Dispatch]:
    """Other databases than PostgreSQL (and small lists): Django's ``bulk_create``."""
    dispatches = [
        Dispatch(message=message, messenger=t[0], recipient=t[2], address=t[1],
                 next_attempt_at=due, queued_at=queued_at, created=now)
        for t in targets
    ]
    return Dispatch.objects.bulk_create(dispatches, batch_size=BULK_BATCH_SIZE)


class StreamWriter:
    """Writes a fan-out's chunks one after the other (PostgreSQL: COPY), each
    while the caller reads and checks the next.

    A chunk's COPY runs in a thread of its own on this connection (so in its
    transaction: the fan-out stays all or nothing), while this thread checks
    and formats the next chunk: the database inserting and the process
    checking addresses take about as long, and one after the other, a
    fan-out of a million waited for each in turn. The ids come from the
    table's identity, not from a query before each chunk. At most one chunk
    is being written and one being prepared, so memory stays flat. Should
    checking the next chunk need the database (a user's address read from a
    related row), it waits for the COPY to finish: psycopg serializes the
    connection's use. Other databases insert each chunk as it comes.
    """

    def __init__(self, message: Message, due: datetime, queued_at: datetime | None, now: datetime):
        self.message, self.due, self.queued_at, self.now = message, due, queued_at, now
        self.pending: Future[None] | None = None
        #: Only on PostgreSQL: the thread that runs each chunk's COPY.
        self.pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="dispatcher-copy")
                     if connection.vendor == "postgresql" else None)

    def write(self, targets: Sequence[Any]) -> int:
        if self.pool is None:
            return len(_bulk_create(self.message, targets, self.due, self.queued_at, self.now))
        text = _copy_text(self.message, targets, _fixed(self.due, self.queued_at, self.now))
        self.wait()
        connection.ensure_connection()
        self.pending = self.pool.submit(_copy_in, connection.connection, text)
        return len(targets)

    def wait(self) -> None:
        """Until the chunk being written is in (its error raised here, as Django's)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            with connection.wrap_database_errors:
                pending.result()

    def close(self) -> None:
        """Wait for the last chunk (also when the fan-out failed: the transaction
        is rolled back only once no COPY is running), and stop the thread."""
        try:
            if self.pending is not None:
                self.pending.exception()  # finished, whatever the outcome
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)


#: The columns a streamed fan-out writes: the id is the table's identity.
STREAM_COLUMNS = COLUMNS[1:]


def _copy_text(message: Message, targets: Sequence[Any], fixed: str, ids: Sequence[int] | None = None) -> str:
    """Rows in COPY's text format (``fixed``: the columns they share), each
    after its id when ``ids`` are given (else the table's identity gives one)."""
    rows = (
        f"{message.pk}\t{_text(messenger)}\t{user.pk if user is not None else NULL}\t"
        f"{_text(address)}\t{fixed}\n"
        for messenger, address, user in targets
    )
    if ids is None:
        return "".join(rows)
    return "".join(f"{pk}\t{row}" for pk, row in zip(ids, rows, strict=True))


def _copy_in(raw: psycopg.Connection[Any], text: str) -> None:
    """COPY ``text`` in on ``raw`` (Django's connection's psycopg connection)."""
    with raw.cursor() as cursor, cursor.copy(
        f"COPY {Dispatch._meta.db_table} ({', '.join(STREAM_COLUMNS)}) FROM STDIN"
    ) as copy:
        copy.write(text)


def _fixed(due: datetime, queued_at: datetime | None, now: datetime) -> str:
    """The columns every row of a fan-out shares, in COPY's text format."""
    return "\t".join([str(Dispatch.Status.PENDING), "0", due.isoformat(),
                      queued_at.isoformat() if queued_at else NULL, now.isoformat()])


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
        columns = ", ".join(COLUMNS)
        # COPY's text format, written in chunks: much faster than write_row().
        fixed = _fixed(due, queued_at, now)
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for start in range(0, len(ids), 10_000):
                copy.write(_copy_text(message, targets[start : start + 10_000], fixed,
                                      ids[start : start + 10_000]))
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


# -- delivery: claim and outcomes on PostgreSQL ----------------------------------------------------
#: Every concrete column of a dispatch, in the order the claim returns them.
DISPATCH_FIELDS = tuple(f.attname for f in Dispatch._meta.concrete_fields)

# The ids are what make these statements selective, and the primary key is
# the one index they should read. The other conditions are guards, written
# inside ``(...) IS TRUE`` so the planner cannot take them for an index
# condition: the status indexes hold an entry for every row that was ever
# processing until VACUUM comes (every claim adds them, every outcome kills
# them), and after a bulk load the statistics call any of them cheap. A plan
# that read those indexes cost 5 to 10 ms a statement instead of 0.2.
CLAIM_SQL = f"""
UPDATE {Dispatch._meta.db_table} SET
    attempts = CASE WHEN claim_token = %(token)s THEN attempts ELSE attempts + 1 END,
    status = %(processing)s, claim_token = %(token)s, lease_expires_at = %(lease)s
WHERE id = ANY(%(ids)s::bigint[]) AND id BETWEEN %(low)s AND %(high)s
    AND (messenger = %(alias)s
         AND ((status = ANY(%(claimable)s::text[]) AND next_attempt_at <= %(now)s)
              OR (status = %(processing)s AND claim_token = %(token)s))) IS TRUE
RETURNING {", ".join(f.column for f in Dispatch._meta.concrete_fields)}
"""

# One statement for any mix of outcomes: each row's new status, when it is
# due again (errors), and its result (``keep``: leave the stored one as it is).
OUTCOMES_SQL = f"""
UPDATE {Dispatch._meta.db_table} AS d SET
    status = v.status,
    dispatched_at = CASE WHEN v.status = %(sent)s THEN %(now)s ELSE d.dispatched_at END,
    next_attempt_at = COALESCE(v.next_at, d.next_attempt_at),
    queued_at = CASE WHEN v.status = %(error)s THEN NULL ELSE d.queued_at END,
    result = CASE WHEN v.keep THEN d.result ELSE v.result END,
    claim_token = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(next)s::timestamptz[], %(results)s::jsonb[],
            %(keep)s::bool[]) AS v(id, status, next_at, result, keep)
WHERE d.id = v.id AND d.id = ANY(%(ids)s::bigint[]) AND d.id BETWEEN %(low)s AND %(high)s
    AND (d.claim_token = %(token)s AND d.status = %(processing)s) IS TRUE
"""


def array_literal(values: Sequence[Any]) -> str:
    """A PostgreSQL array in its text form, ``{1,2,"a \\"b\\""}``, None as NULL:
    one string parameter instead of a list psycopg adapts element by element
    (which was a tenth of a worker's CPU per SMTP mail)."""
    return "{" + ",".join("NULL" if v is None else _element(v) for v in values) + "}"


def _element(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bound_cursor() -> psycopg.Cursor[Any]:
    """A cursor of Django's connection (so of its transaction) that binds on
    the server: arrays go as one parameter each, not as quoted literals."""
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None and settings.DISPATCHER_PREPARED_STATEMENTS:
        # Django turns psycopg's preparing off (None); a threshold no query
        # reaches keeps it off for every query but those asking (PREPARED).
        raw.prepare_threshold = 2**31 - 1
    return psycopg.Cursor(raw)


def _prepared() -> bool | None:
    """``prepare=`` for the hot path's statements: planned once per
    connection (a generic plan; the ``id BETWEEN`` bounds let PostgreSQL
    leave out the other months' partitions when it runs), where planning
    them each time cost as much as running them. None: psycopg's default
    (not prepared, as Django has it)."""
    return True if settings.DISPATCHER_PREPARED_STATEMENTS else None


def claim_returning(alias: str, ids: Sequence[int], token: Any, now: datetime,
                    lease: datetime) -> list[Dispatch]:
    """The claim of :func:`dispatcher.delivery.claim` (the same conditional
    UPDATE, the same rules) returning the rows won, as Dispatch objects."""
    if not ids:
        return []
    params = {"token": token, "processing": str(Dispatch.Status.PROCESSING), "lease": lease,
              "ids": array_literal(ids), "low": min(ids), "high": max(ids), "alias": alias,
              "claimable": array_literal([str(s) for s in Dispatch.CLAIMABLE]), "now": now}
    with connection.wrap_database_errors, _bound_cursor() as cursor:
        # Binary results: psycopg's C loaders read the timestamps (Django's
        # text loader for them is Python, and was most of the claim's CPU).
        cursor.execute(CLAIM_SQL, params, binary=True, prepare=_prepared())
        rows = cursor.fetchall()
    result = Dispatch._meta.get_field("result")
    position = DISPATCH_FIELDS.index("result")
    stamps = [i for i, f in enumerate(Dispatch._meta.concrete_fields)
              if f.get_internal_type() == "DateTimeField"]
    alias_db = connection.alias
    claimed = []
    for row in rows:
        values = list(row)
        if isinstance(values[position], (str, bytes)):  # jsonb as text, as Django's connection reads it
            values[position] = result.from_db_value(values[position], None, connection)
        for i in stamps:  # the same tzinfo as Django's own reads: UTC as datetime.timezone.utc
            if values[i] is not None:
                values[i] = values[i].astimezone(UTC)
        claimed.append(_loaded(alias_db, values))
    return claimed


def _loaded(alias: str, values: list[Any]) -> Dispatch:
    """A Dispatch as ``Model.from_db`` makes it from a full row, minus the per-row ``__init__``."""
    dispatch = Dispatch.__new__(Dispatch)
    state = ModelState.__new__(ModelState)
    state.__dict__.update(adding=False, db=alias, fields_cache={})
    dispatch.__dict__.update(zip(DISPATCH_FIELDS, values, strict=True))
    dispatch._state = state
    return dispatch


#: One outcome to write: id, status, next_attempt_at (errors), result, keep the stored result.
OutcomeRow = tuple[int, str, datetime | None, Any, bool]


def write_outcomes(token: Any, now: datetime, outcomes: Sequence[OutcomeRow]) -> int:
    """Write ``(id, status, next_attempt_at or None, result, keep)`` outcomes of
    the rows ``token`` holds, in one statement; return how many rows it wrote."""
    if not outcomes:
        return 0
    ids, statuses, due, results, keep = zip(*outcomes, strict=True)
    params = {"sent": str(Dispatch.Status.SENT), "error": str(Dispatch.Status.ERROR), "now": now,
              "processing": str(Dispatch.Status.PROCESSING), "token": token, "ids": array_literal(ids),
              "low": min(ids), "high": max(ids),
              "statuses": array_literal(statuses),
              "next": array_literal([None if d is None else d.isoformat() for d in due]),
              "results": array_literal([None if r is None else json.dumps(r) for r in results]),
              "keep": array_literal(["t" if k else "f" for k in keep])}
    with connection.wrap_database_errors, _bound_cursor() as cursor:
        cursor.execute(OUTCOMES_SQL, params, prepare=_prepared())
        return cursor.rowcount
