"""Monthly partitions of the dispatch history on PostgreSQL.

Months of history must not slow the hot path or the sweeps, and retiring a
month must not cost a DELETE of every one of its rows. On PostgreSQL
``dispatcher_dispatch`` is partitioned by RANGE of ``id`` and
``dispatcher_dispatcherror`` by RANGE of ``dispatch_id``, with the same
bounds, and each partition holds one month:

- ids come from one sequence, in insert order, so a range of ids is a range
  of time. :func:`maintain` creates the partitions of the coming months ahead
  (``STEP`` ids each, one after the other) and, at the start of a month, moves
  the sequence to the first id of that month's partition;
- every query of the hot path names its rows by id (the claim, the rows a
  worker reads back, its outcome writes), so PostgreSQL prunes it to the
  partition of the month: its cost does not grow with the months kept.
  Partitioning by ``created`` would make each of them probe every month's
  primary-key index (see docs/performance.md, "History");
- an error row lives in the partition of its dispatch and goes with it; the
  ids stay the primary key as Django knows it (the error table's primary key
  is ``(id, dispatch_id)`` in the database, which Django never checks);
- a DEFAULT partition takes any id no month covers, so no insert can fail;
- a month is retired with ``DROP TABLE`` once its whole range is older than
  ``DISPATCHER_CLEANUP_DAYS`` and it holds no unfinished row (pending, error,
  processing); a month that still holds one is kept and reported.

If the sequence outruns a month (more than ``STEP`` dispatches in a month) or
the sweep does not run, rows land in the next month's partition or the
default one: retention then comes later, never earlier, since a month is
dropped only when its newest row is older than the cutoff.

On other databases (SQLite) nothing here applies: the tables are plain and
:func:`dispatcher.sweeps.cleanup_sent` is the retention.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.apps import apps as django_apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import SET_NULL
from django.utils import timezone

from .models import Dispatch, DispatchError

logger = logging.getLogger("dispatcher.partitions")

DISPATCH = "dispatcher_dispatch"
ERROR = "dispatcher_dispatcherror"
#: table -> the column it is partitioned by
KEYS = {DISPATCH: "id", ERROR: "dispatch_id"}
#: table -> the columns of its primary key in the database when partitioned
PRIMARY_KEYS = {DISPATCH: ("id",), ERROR: ("id", "dispatch_id")}

#: Ids reserved for one month's partition: 10^9 a month is 385 dispatches a
#: second around the clock; beyond that a month spills into the next one's
#: range, which stays correct (see above).
STEP = 10**9
#: Months created ahead of the current one.
AHEAD = 2
#: The sequence jumps to a month's first id only if at least this many ids
#: separate it from that id, so no id taken concurrently can reach the jump.
JUMP_MARGIN = 10**6
#: How long a DROP waits for the parent's lock before giving up for this run
#: (a DROP waits for transactions using the table, and queries queue behind it).
LOCK_TIMEOUT = "2s"
DROP_TRIES = 3
#: Rows per statement when the migration copies a table.
COPY_CHUNK = 100_000
#: Unfinished states: a month holding one of them is not dropped.
UNFINISHED = ("pending", "error", "processing")
#: Session-level advisory lock: one maintenance run at a time.
LOCK_KEY = 0x64697370  # "disp"

_MONTH = re.compile(r"_y(\d{4})m(\d{2})$")
_BOUND = re.compile(r"FOR VALUES FROM \((.+?)\) TO \((.+?)\)")


class PartitionMaintenanceError(Exception):
    """A maintenance step failed (a lock not granted, a DDL error); the rest was done."""


@dataclass(frozen=True)
class Partition:
    """One partition of ``dispatcher_dispatch`` (its error twin has the same suffix)."""

    name: str
    #: First day of its month (UTC); None for the default partition or one made by hand.
    month: date | None
    #: Id bounds, lower inclusive, upper exclusive; None: MINVALUE / MAXVALUE.
    lo: int | None
    hi: int | None
    default: bool = False

    @property
    def suffix(self) -> str:
        return self.name[len(DISPATCH):]

    def contains(self, pk: int) -> bool:
        return (self.lo is None or pk >= self.lo) and (self.hi is None or pk < self.hi)


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    #: month partitions old enough to drop that still hold unfinished rows -> how many
    held: dict[str, int] = field(default_factory=dict)
    #: the sequence moved to this id (the first of the current month)
    jumped_to: int | None = None
    failures: list[str] = field(default_factory=list)


# -- reading the layout ------------------------------------------------------------------------
def _connection(using: str | None) -> BaseDatabaseWrapper:
    return connections[using or DEFAULT_DB_ALIAS]


def is_partitioned(using: str | None = None) -> bool:
    """Whether ``dispatcher_dispatch`` is a partitioned table here."""
    conn = _connection(using)
    if conn.vendor != "postgresql":
        return False
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [DISPATCH])
        return cursor.fetchone() is not None


def month_of(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def _parse_bound(text: str) -> int | None:
    text = text.strip().strip("'")
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return int(text)


def list_partitions(cursor: Any, table: str = DISPATCH) -> list[Partition]:
    """The partitions of ``table``, ordered by their lower bound (the default last)."""
    cursor.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        [table],
    )
    found = []
    for name, bound in cursor.fetchall():
        if bound == "DEFAULT":
            found.append(Partition(name, None, None, None, default=True))
            continue
        match = _BOUND.match(bound)
        if not match:  # not a range partition: not ours
            continue
        month = _MONTH.search(name)
        found.append(Partition(
            name, date(int(month[1]), int(month[2]), 1) if month else None,
            _parse_bound(match[1]), _parse_bound(match[2]),
        ))
    return sorted(found, key=lambda p: (p.default, p.lo if p.lo is not None else -(2**63)))


def _sequence(cursor: Any) -> str:
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [DISPATCH])
    return cursor.fetchone()[0]


def last_id(cursor: Any) -> int:
    """The last id the dispatch sequence handed out (0 before the first)."""
    cursor.execute(f"SELECT last_value, is_called FROM {_sequence(cursor)}")
    value, called = cursor.fetchone()
    return value if called else value - 1


# -- maintenance ---------------------------------------------------------------------------------
def maintain(now: datetime | None = None, days: int | None = None, using: str | None = None) -> Report:
    """Create the coming months' partitions, move the sequence into the
    current month, and drop the months past retention.

    Raises :class:`PartitionMaintenanceError` (after doing all it could) when
    a step failed, e.g. a DROP that could not get its lock in time.
    """
    conn = _connection(using)
    report = Report()
    if not is_partitioned(using):
        return report
    now = now or timezone.now()
    days = settings.DISPATCHER_CLEANUP_DAYS if days is None else days
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise PartitionMaintenanceError("another partition maintenance run is in progress")
        try:
            _ensure_months(conn, month_of(now), report)
            _jump(conn, month_of(now), report)
            _retire(conn, now - timedelta(days=days), report)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
    for name, count in report.held.items():
        logger.warning("partition %s is past retention but holds %d unfinished dispatches: kept", name, count)
    if report.created or report.dropped:
        logger.info("partitions created: %s; dropped: %s", report.created, report.dropped)
    if report.failures:
        raise PartitionMaintenanceError("; ".join(report.failures))
    return report


def _ensure_months(conn: BaseDatabaseWrapper, current: date, report: Report) -> None:
    """Make sure the current month and the next AHEAD months have partitions.
    They are made months ahead, so a run that cannot get its locks in time
    (the attach scans the default partition under its lock) leaves it to the next."""
    try:
        with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            existing = list_partitions(cursor)
            newest = max((p.month for p in existing if p.month is not None), default=None)
            ranged = [p for p in existing if not p.default]
            top = max((p.hi for p in ranged if p.hi is not None), default=None)
            if top is None:  # no bounded partition (made by hand?): start above every id used
                top = (last_id(cursor) // STEP + 1) * STEP
            created = []
            for ahead in range(AHEAD + 1):
                month = add_months(current, ahead)
                if newest is not None and month <= newest:
                    continue
                _create_partition(cursor, month, top, top + STEP)
                created.append(partition_name(DISPATCH, month))
                top += STEP
        report.created.extend(created)
    except Exception as exc:
        report.failures.append(f"could not create the coming months' partitions: {exc}".strip())


def _create_partition(cursor: Any, month: date, lo: int | None, hi: int) -> None:
    """Attach the partitions of ``month`` to both tables. Rows that the default
    partition took for this range meanwhile move into the new partition first."""
    for table, key in KEYS.items():
        name = partition_name(table, month)
        q = _quote(cursor)
        cursor.execute(f"CREATE TABLE {q(name)} (LIKE {q(table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                       f"INCLUDING STORAGE INCLUDING COMPRESSION)")
        condition = f"{q(key)} < %s" if lo is None else f"{q(key)} >= %s AND {q(key)} < %s"
        params = [hi] if lo is None else [lo, hi]
        for part in list_partitions(cursor, table):
            if part.default:
                columns = ", ".join(q(c) for c in _columns(cursor, table))
                cursor.execute(f"WITH moved AS (DELETE FROM {q(part.name)} WHERE {condition} RETURNING *) "
                               f"INSERT INTO {q(name)} ({columns}) SELECT {columns} FROM moved", params)
        bounds = f"FROM ({'MINVALUE' if lo is None else int(lo)}) TO ({int(hi)})"
        # ATTACH (SHARE UPDATE EXCLUSIVE on the parent) rather than CREATE ... PARTITION OF
        # (ACCESS EXCLUSIVE): the hot path goes on meanwhile. The parent's indexes are
        # created on the new table by the attach.
        cursor.execute(f"ALTER TABLE {q(table)} ATTACH PARTITION {q(name)} FOR VALUES {bounds}")


def _jump(conn: BaseDatabaseWrapper, current: date, report: Report) -> None:
    """Move the id sequence to the first id of the current month's partition,
    so this month's dispatches land in it (the sequence never moves back)."""
    with conn.cursor() as cursor:
        mine = [p for p in list_partitions(cursor) if p.month == current and p.lo is not None]
        if not mine:
            return
        q = _quote(cursor)
        # Above any id already in it (one given explicitly, or moved in from the default).
        cursor.execute(f"SELECT max(id) FROM {q(mine[0].name)}")
        inside = cursor.fetchone()[0]
        first = max(mine[0].lo, inside + 1) if inside is not None else mine[0].lo
        assert first is not None
        if last_id(cursor) + JUMP_MARGIN < first:
            cursor.execute("SELECT setval(%s, %s, false)", [_sequence(cursor), first])
            report.jumped_to = first
            logger.info("dispatch ids continue at %d (the partition of %s)", first, current)


def _retire(conn: BaseDatabaseWrapper, cutoff: datetime, report: Report) -> None:
    """Drop the months whose whole range is older than ``cutoff``, unless they
    hold an unfinished row."""
    with conn.cursor() as cursor:
        parts = list_partitions(cursor)
    for part in parts:
        if part.month is None or _month_start(add_months(part.month, 1)) > cutoff:
            continue
        with conn.cursor() as cursor:
            q = _quote(cursor)
            # The newest row by id (ids follow insert order): a month the sweep was late to
            # leave, or a spill from the month before, holds rows newer than its name says.
            cursor.execute(f"SELECT created FROM {q(part.name)} ORDER BY id DESC LIMIT 1")
            newest = cursor.fetchone()
            if newest is not None and newest[0] >= cutoff:
                continue
            unfinished = _unfinished(cursor, part.name)
        if unfinished:
            report.held[part.name] = unfinished
            continue
        _drop(conn, part, report)


def _month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def _unfinished(cursor: Any, name: str) -> int:
    """Rows not yet final, counted through the partial indexes (requeue and lease)."""
    q = _quote(cursor)
    cursor.execute(f"SELECT (SELECT count(*) FROM {q(name)} WHERE status IN ('pending', 'error'))"
                   f" + (SELECT count(*) FROM {q(name)} WHERE status = 'processing')")
    return cursor.fetchone()[0]


class _Held(Exception):
    """Unfinished rows appeared in a month about to be dropped."""


def _release_references(conn: BaseDatabaseWrapper, part: Partition) -> None:
    """Apply the ORM's on_delete rules to the rows that point at the month's
    dispatches (receipts, fallback hops, suppressions, digest windows): no
    database constraint does it, since one would forbid the DROP."""
    in_month: dict[str, int] = {}
    for model in django_apps.get_models():
        for fk in model._meta.concrete_fields:
            if not (fk.is_relation and fk.related_model is Dispatch) or model is DispatchError:
                continue
            in_month.clear()
            if part.lo is not None:
                in_month[f"{fk.attname}__gte"] = part.lo
            if part.hi is not None:
                in_month[f"{fk.attname}__lt"] = part.hi
            rows = model._default_manager.using(conn.alias).filter(**in_month)
            if fk.remote_field.on_delete is SET_NULL:
                rows.update(**{fk.name: None})
            else:
                rows.delete()


def _drop(conn: BaseDatabaseWrapper, part: Partition, report: Report) -> None:
    """DROP the month's two partitions. It takes the parents' locks in the order
    the workers do (dispatches, then errors), so it can wait but not deadlock,
    and waits LOCK_TIMEOUT at most: meanwhile the hot path queues behind it."""
    error_name = ERROR + part.suffix
    for attempt in range(1, DROP_TRIES + 1):
        try:
            with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
                q = _quote(cursor)
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                cursor.execute(f"LOCK TABLE ONLY {q(DISPATCH)} IN ACCESS EXCLUSIVE MODE")
                cursor.execute(f"LOCK TABLE ONLY {q(ERROR)} IN ACCESS EXCLUSIVE MODE")
                # A failed dispatch retried from the dashboard since the count above is
                # unfinished again: look once more, now that no writer can come in.
                if _unfinished(cursor, part.name):
                    raise _Held()
                _release_references(conn, part)
                cursor.execute("SELECT to_regclass(%s)", [error_name])
                if cursor.fetchone()[0] is not None:
                    cursor.execute(f"DROP TABLE {q(error_name)}")
                cursor.execute(f"DROP TABLE {q(part.name)}")
            report.dropped.append(part.name)
            return
        except _Held:
            with conn.cursor() as cursor:
                report.held[part.name] = _unfinished(cursor, part.name)
            return
        except Exception as exc:  # a lock not granted in time, mostly
            if attempt == DROP_TRIES:
                report.failures.append(f"could not drop {part.name}: {exc}".strip())
                return
            time.sleep(0.5 * attempt)


# -- the migration: plain tables <-> partitioned tables --------------------------------------------
def partition_tables(conn: BaseDatabaseWrapper, now: datetime | None = None) -> list[Partition]:
    """Rebuild both tables as partitioned ones, one partition per month of the
    rows already there (and the coming months), copying every row. Used by
    migration 0006 inside its transaction."""
    now = now or timezone.now()
    with conn.cursor() as cursor:
        layout = _layout_from_rows(cursor, month_of(now))
        _rebuild(cursor, DISPATCH, layout)
        _rebuild(cursor, ERROR, layout)
        return list_partitions(cursor)


def unpartition_tables(conn: BaseDatabaseWrapper) -> None:
    """The reverse of :func:`partition_tables`: plain tables again, rows copied."""
    with conn.cursor() as cursor:
        _rebuild(cursor, DISPATCH, None)
        _rebuild(cursor, ERROR, None)


def _layout_from_rows(cursor: Any, current: date) -> list[tuple[date, int | None, int]]:
    """(month, lo, hi) for each month of the existing dispatches, the current
    month and AHEAD more: bounds from the first id of each month, the first
    from MINVALUE, and STEP ids for each month to come."""
    cursor.execute(f"SELECT date_trunc('month', created AT TIME ZONE 'UTC')::date, min(id) "
                   f"FROM {DISPATCH} GROUP BY 1 ORDER BY 1")
    # A month starts at its first id. A month whose first id comes after a later
    # month's (rows dated back) has no range of its own: its rows stay where their ids fall.
    kept: list[tuple[date, int]] = []
    for month, first in reversed(cursor.fetchall()):
        if not kept or first < kept[-1][1]:
            kept.append((month, first))
    firsts: list[tuple[date, int | None]] = [(m, f) for m, f in reversed(kept)]
    if firsts:
        firsts[0] = (firsts[0][0], None)  # the oldest month from MINVALUE
    cursor.execute(f"SELECT coalesce(max(id), 0) FROM {DISPATCH}")
    top = cursor.fetchone()[0]
    if not firsts:
        firsts.append((current, None))
    elif firsts[-1][0] < current:
        firsts.append((current, top + 1))
    # At least STEP / 2 ids of room for this month, then months of STEP ids.
    hi = ((top + STEP // 2) // STEP + 1) * STEP
    layout = []
    for (month, lo), (_, following) in zip(firsts, firsts[1:], strict=False):
        assert following is not None
        layout.append((month, lo, following))
    layout.append((firsts[-1][0], firsts[-1][1], hi))
    for ahead in range(1, AHEAD + 1):
        layout.append((add_months(firsts[-1][0], ahead), hi, hi + STEP))
        hi += STEP
    return layout


def _quote(cursor: Any) -> Any:
    return cursor.db.ops.quote_name


def _columns(cursor: Any, table: str) -> list[str]:
    cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                   "AND NOT attisdropped ORDER BY attnum", [table])
    return [row[0] for row in cursor.fetchall()]


def _rebuild(cursor: Any, table: str, layout: list[tuple[date, int | None, int]] | None) -> None:
    """Rename ``table``, create it again (partitioned when ``layout`` is given)
    with the same columns, constraints and indexes, copy the rows in chunks,
    drop the old one."""
    q = _quote(cursor)
    old = f"{table}_old"
    key = KEYS[table]
    cursor.execute(f"ALTER TABLE {q(table)} RENAME TO {q(old)}")
    # What to rebuild: indexes (but the primary key's), foreign keys and unique
    # constraints, and foreign keys of other tables pointing here.
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)",
        [old],
    )
    indexes = cursor.fetchall()
    cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE conrelid = to_regclass(%s) AND contype IN ('f', 'u')", [old])
    constraints = cursor.fetchall()
    cursor.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE confrelid = to_regclass(%s) AND contype = 'f' AND conrelid <> confrelid", [old])
    referencing = cursor.fetchall()
    columns = ", ".join(q(c) for c in _columns(cursor, old))

    partitioned = f" PARTITION BY RANGE ({q(key)})" if layout is not None else ""
    cursor.execute(f"CREATE TABLE {q(table)} (LIKE {q(old)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                   f"INCLUDING STORAGE INCLUDING COMMENTS INCLUDING COMPRESSION){partitioned}")
    cursor.execute(f"ALTER TABLE {q(table)} ALTER COLUMN id DROP DEFAULT")
    if layout is not None:
        for month, lo, hi in layout:
            bounds = f"FROM ({'MINVALUE' if lo is None else int(lo)}) TO ({int(hi)})"
            cursor.execute(f"CREATE TABLE {q(partition_name(table, month))} PARTITION OF {q(table)} "
                           f"FOR VALUES {bounds}")
        cursor.execute(f"CREATE TABLE {q(table + '_default')} PARTITION OF {q(table)} DEFAULT")

    # Copy in chunks (keyset by id: months leave wide gaps between ids), before any
    # index exists: building them afterwards is faster than updating them per row.
    after = -(2**63)
    while True:
        cursor.execute(f"WITH copied AS (INSERT INTO {q(table)} ({columns}) SELECT {columns} "
                       f"FROM {q(old)} WHERE id > %s ORDER BY id LIMIT %s RETURNING id) "
                       f"SELECT count(*), max(id) FROM copied", [after, COPY_CHUNK])
        count, after = cursor.fetchone()
        if not count:
            break
    cursor.execute(f"SELECT max(id) FROM {q(old)}")
    high = cursor.fetchone()[0]

    for source, name, _ in referencing:
        cursor.execute(f"ALTER TABLE {source} DROP CONSTRAINT {q(name)}")
    cursor.execute(f"DROP TABLE {q(old)}")  # its identity sequence and index names go with it

    cursor.execute(f"ALTER TABLE {q(table)} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    if high is not None:
        cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, high])
    pk = PRIMARY_KEYS[table] if layout is not None else ("id",)
    cursor.execute(f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(table + '_pkey')} "
                   f"PRIMARY KEY ({', '.join(q(c) for c in pk)})")
    on_old = re.compile(rf" ON (ONLY )?(\w+\.)?{re.escape(q(old))} | ON (ONLY )?(\w+\.)?{re.escape(old)} ")
    for _, definition in indexes:
        cursor.execute(on_old.sub(f" ON {q(table)} ", definition, count=1))
    for name, definition in constraints:
        cursor.execute(f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} {definition}")
    for source, name, definition in referencing:
        cursor.execute(f"ALTER TABLE {source} ADD CONSTRAINT {q(name)} {definition}")
    cursor.execute(f"ANALYZE {q(table)}")


def dropped_whole(cutoff: datetime, using: str | None = None) -> tuple[int | None, int | None] | None:
    """The id span of the months :func:`maintain` will drop whole but not yet
    (their month ends after ``cutoff``): ``(lo, hi)``, None for an open end.
    None when the tables are not partitioned or no such month exists.

    :func:`dispatcher.sweeps.cleanup_sent` leaves the rows of this span alone:
    deleting them row by row would only repeat, at a much higher cost, what
    the DROP of their month does anyway."""
    if not is_partitioned(using):
        return None
    with _connection(using).cursor() as cursor:
        young = [p for p in list_partitions(cursor)
                 if p.month is not None and _month_start(add_months(p.month, 1)) > cutoff]
    if not young:
        return None
    lo = None if any(p.lo is None for p in young) else min(p.lo for p in young if p.lo is not None)
    hi = None if any(p.hi is None for p in young) else max(p.hi for p in young if p.hi is not None)
    return lo, hi
