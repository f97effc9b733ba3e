"""Counts of dispatches kept as they change, so reading them costs no scan.

The dashboard, the Prometheus scrape, ``dispatcher_status`` and the admin
want "how many dispatches per messenger and status" and "how many failed
attempts per messenger". Counting the table answers that with a scan, and at
10,000,000 rows one scan takes seconds. Here the answer is kept in
``DispatchCounter`` (per kind, messenger, status and UTC day of creation):

- **Database triggers write it, in the transaction of each change.** On
  PostgreSQL one statement-level trigger per INSERT, UPDATE, DELETE and
  TRUNCATE of ``dispatcher_dispatch`` and ``dispatcher_dispatcherror`` reads
  the statement's transition tables (the rows before and after) and appends
  one aggregated row per (messenger, status, day) that changed: a batch claimed
  or flushed is one more INSERT inside the same statement, whatever its size,
  and no extra round trip. On SQLite row-level triggers do the same row by
  row. Triggers see every writer, not only the engine's functions: the claim,
  the outcome flush, the sweeps, cancel and retry from the admin or the
  dashboard, the cleanup's DELETEs, a site's own ``Dispatch.objects.update``
  or a shell. A change rolled back takes its counts with it.
- **Deltas, not one hot row per key** (PostgreSQL). Two workers flushing
  SENT rows of the same messenger at once would otherwise wait on the same
  counter row, and transactions that touch several keys in different orders
  could deadlock. Each statement appends its deltas instead (an INSERT never
  waits), a count is ``SUM(n)`` over a key's rows, and :func:`compact` (beat,
  every few seconds) folds them into one row per key in one statement.
- **What the triggers cannot see** is fixed by the caller or by
  reconciliation: dropping a month's partition fires no DELETE trigger, so
  :mod:`dispatcher.partitions` subtracts that month's counts
  (:func:`partition_deltas`) in the transaction of the DROP; anything else
  (triggers disabled for a bulk load, a partition truncated by hand, a row
  deleted while its month was being dropped) is drift that
  :func:`reconcile` (beat, daily) finds and corrects by comparing with a real
  count, in one consistent snapshot, while writers go on.

Exact: the counts by messenger and status, and the failed attempts by
messenger and permanence. What is due now is derived: the claimable rows
counted here less those due later, read from a partial index of the waiting
rows; the oldest due pending dispatch is that index's first due entry. Their
cost grows with what is scheduled ahead, not with the backlog due now nor
with the history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Sum
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from .models import DispatchCounter

logger = logging.getLogger("dispatcher.counters")

TABLE = "dispatcher_dispatchcounter"
_INSERT = f"INSERT INTO {TABLE} (kind, messenger, status, day, n)"
DISPATCH = "dispatcher_dispatch"
ERROR = "dispatcher_dispatcherror"
#: Transaction-level advisory lock: one compaction at a time (PostgreSQL).
COMPACT_LOCK = 0x636F756E  # "coun"

Key = tuple[str, str, str, Any]  # kind, messenger, status, day


# -- reading -----------------------------------------------------------------------------------------
def kept(using: str | None = None) -> bool:
    """Whether the counts are kept as rows change (triggers: PostgreSQL and
    SQLite), so a reader may derive from them; elsewhere they are only as
    fresh as the last reconciliation."""
    return connections[using or DEFAULT_DB_ALIAS].vendor in ("postgresql", "sqlite")


def totals(kind: str = DispatchCounter.Kind.DISPATCH, using: str | None = None) -> dict[str, dict[str, int]]:
    """``{messenger: {status: count}}`` of one kind, zeros left out: one
    GROUP BY over the counter table (a few thousand rows, not the history).
    For errors the "status" is ``"temporary"`` or ``"permanent"``."""
    return every_total(using, kind).get(kind, {})


def every_total(using: str | None = None, kind: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """``{kind: {messenger: {status: count}}}``: both kinds in one query (a
    scrape needs both), or only ``kind``."""
    rows = DispatchCounter.objects.using(using or DEFAULT_DB_ALIAS).order_by()
    if kind is not None:
        rows = rows.filter(kind=kind)
    result: dict[str, dict[str, dict[str, int]]] = {}
    for row_kind, messenger, status, total in rows.values_list("kind", "messenger", "status").annotate(
            total=Sum("n")):
        if total:
            result.setdefault(row_kind, {}).setdefault(messenger, {})[status] = int(total)
    return result


# -- the triggers ------------------------------------------------------------------------------------
_PG_DAY = "(({t}.created AT TIME ZONE 'UTC')::date)"
_PG_ERROR_STATUS = "(CASE WHEN {t}.permanent THEN 'permanent' ELSE 'temporary' END)"

_PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION dispatcher_count_dispatches() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {TABLE} (kind, messenger, status, day, n)
        SELECT 'dispatch', r.messenger, r.status, {_PG_DAY.format(t="r")}, count(*)
        FROM dispatcher_new_rows r GROUP BY 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {TABLE} (kind, messenger, status, day, n)
        SELECT 'dispatch', r.messenger, r.status, {_PG_DAY.format(t="r")}, -count(*)
        FROM dispatcher_old_rows r GROUP BY 2, 3, 4;
    ELSE
        -- Most updates change no status (a lease extended, queued_at set): everything cancels out.
        INSERT INTO {TABLE} (kind, messenger, status, day, n)
        SELECT 'dispatch', messenger, status, day, sum(n) FROM (
            SELECT r.messenger, r.status, {_PG_DAY.format(t="r")} AS day, 1 AS n FROM dispatcher_new_rows r
            UNION ALL
            SELECT r.messenger, r.status, {_PG_DAY.format(t="r")}, -1 FROM dispatcher_old_rows r
        ) AS moved GROUP BY messenger, status, day HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION dispatcher_count_errors() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {TABLE} (kind, messenger, status, day, n)
        SELECT 'error', coalesce(d.messenger, ''), {_PG_ERROR_STATUS.format(t="e")}, {_PG_DAY.format(t="e")},
               count(*)
        FROM dispatcher_new_rows e LEFT JOIN {DISPATCH} d ON d.id = e.dispatch_id GROUP BY 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {TABLE} (kind, messenger, status, day, n)
        SELECT 'error', coalesce(d.messenger, ''), {_PG_ERROR_STATUS.format(t="e")}, {_PG_DAY.format(t="e")},
               -count(*)
        FROM dispatcher_old_rows e LEFT JOIN {DISPATCH} d ON d.id = e.dispatch_id GROUP BY 2, 3, 4;
    ELSE
        INSERT INTO {TABLE} (kind, messenger, status, day, n)
        SELECT 'error', messenger, status, day, sum(n) FROM (
            SELECT coalesce(d.messenger, '') AS messenger, {_PG_ERROR_STATUS.format(t="e")} AS status,
                   {_PG_DAY.format(t="e")} AS day, 1 AS n
            FROM dispatcher_new_rows e LEFT JOIN {DISPATCH} d ON d.id = e.dispatch_id
            UNION ALL
            SELECT coalesce(d.messenger, ''), {_PG_ERROR_STATUS.format(t="e")}, {_PG_DAY.format(t="e")}, -1
            FROM dispatcher_old_rows e LEFT JOIN {DISPATCH} d ON d.id = e.dispatch_id
        ) AS moved GROUP BY messenger, status, day HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION dispatcher_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {TABLE} WHERE kind = TG_ARGV[0];
    RETURN NULL;
END $$;
"""

_PG_TRIGGERS = [
    (table, function, event, kind)
    for table, function, kind in ((DISPATCH, "dispatcher_count_dispatches", "dispatch"),
                                  (ERROR, "dispatcher_count_errors", "error"))
    for event in ("insert", "update", "delete", "truncate")
]


def _pg_install(cursor: Any) -> None:
    cursor.execute(_PG_FUNCTIONS)
    for table, function, event, kind in _PG_TRIGGERS:
        name = f"{table}_count_{event}"
        if event == "truncate":
            cursor.execute(f"CREATE TRIGGER {name} AFTER TRUNCATE ON {table} "
                           f"FOR EACH STATEMENT EXECUTE FUNCTION dispatcher_count_truncate('{kind}')")
            continue
        referencing = {"insert": "NEW TABLE AS dispatcher_new_rows",
                       "delete": "OLD TABLE AS dispatcher_old_rows",
                       "update": "OLD TABLE AS dispatcher_old_rows NEW TABLE AS dispatcher_new_rows"}[event]
        cursor.execute(f"CREATE TRIGGER {name} AFTER {event.upper()} ON {table} "
                       f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()")


def _pg_uninstall(cursor: Any) -> None:
    for table, _, event, _ in _PG_TRIGGERS:
        cursor.execute(f"DROP TRIGGER IF EXISTS {table}_count_{event} ON {table}")
    for function in ("dispatcher_count_dispatches", "dispatcher_count_errors", "dispatcher_count_truncate"):
        cursor.execute(f"DROP FUNCTION IF EXISTS {function}()")


def _sqlite_add(kind: str, messenger: str, status: str, day: str, delta: int) -> str:
    """Add ``delta`` to the key's first row, or insert one: SQLite has one
    writer at a time, so one row per key is kept up to date in place."""
    key = (f"kind = '{kind}' AND messenger = {messenger} AND status = {status} AND day = {day}")
    return (f"UPDATE {TABLE} SET n = n + ({delta}) WHERE id = (SELECT id FROM {TABLE} WHERE {key} LIMIT 1); "
            f"INSERT INTO {TABLE} (kind, messenger, status, day, n) SELECT '{kind}', {messenger}, {status}, "
            f"{day}, {delta} WHERE NOT EXISTS (SELECT 1 FROM {TABLE} WHERE {key});")


def _sqlite_triggers() -> list[str]:
    def dispatch(row: str, delta: int) -> str:
        return _sqlite_add("dispatch", f"{row}.messenger", f"{row}.status", f"date({row}.created)", delta)

    def error(row: str, delta: int) -> str:
        messenger = f"coalesce((SELECT messenger FROM {DISPATCH} WHERE id = {row}.dispatch_id), '')"
        status = f"(CASE WHEN {row}.permanent THEN 'permanent' ELSE 'temporary' END)"
        return _sqlite_add("error", messenger, status, f"date({row}.created)", delta)

    changed = ("OLD.status IS NOT NEW.status OR OLD.messenger IS NOT NEW.messenger "
               "OR date(OLD.created) IS NOT date(NEW.created)")
    changed_error = ("OLD.permanent IS NOT NEW.permanent OR OLD.dispatch_id IS NOT NEW.dispatch_id "
                     "OR date(OLD.created) IS NOT date(NEW.created)")
    return [
        f"CREATE TRIGGER {DISPATCH}_count_insert AFTER INSERT ON {DISPATCH} BEGIN {dispatch('NEW', 1)} END",
        f"CREATE TRIGGER {DISPATCH}_count_delete AFTER DELETE ON {DISPATCH} BEGIN {dispatch('OLD', -1)} END",
        f"CREATE TRIGGER {DISPATCH}_count_update AFTER UPDATE OF status, messenger, created ON {DISPATCH} "
        f"WHEN {changed} BEGIN {dispatch('OLD', -1)} {dispatch('NEW', 1)} END",
        f"CREATE TRIGGER {ERROR}_count_insert AFTER INSERT ON {ERROR} BEGIN {error('NEW', 1)} END",
        f"CREATE TRIGGER {ERROR}_count_delete AFTER DELETE ON {ERROR} BEGIN {error('OLD', -1)} END",
        f"CREATE TRIGGER {ERROR}_count_update AFTER UPDATE OF permanent, dispatch_id, created ON {ERROR} "
        f"WHEN {changed_error} BEGIN {error('OLD', -1)} {error('NEW', 1)} END",
    ]


_SQLITE_TRIGGER_NAMES = [f"{t}_count_{e}" for t in (DISPATCH, ERROR) for e in ("insert", "delete", "update")]


def install(conn: BaseDatabaseWrapper) -> None:
    """Create the triggers (migration 0009). Other databases than PostgreSQL
    and SQLite get none: :func:`reconcile` is then the only writer."""
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            _pg_install(cursor)
        elif conn.vendor == "sqlite":
            for sql in _sqlite_triggers():
                cursor.execute(sql)
        else:
            logger.warning("no counter triggers on %s: counts are only as fresh as the last reconcile",
                           conn.vendor)


def uninstall(conn: BaseDatabaseWrapper) -> None:
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            _pg_uninstall(cursor)
        elif conn.vendor == "sqlite":
            for name in _SQLITE_TRIGGER_NAMES:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")


def installed(conn: BaseDatabaseWrapper) -> bool | None:
    """Whether every counter trigger is there; None where there are none to have
    (another database, or the tables not created yet)."""
    with conn.cursor() as cursor:
        tables = set(conn.introspection.table_names(cursor))
        if not {TABLE, DISPATCH, ERROR} <= tables:
            return None
        if conn.vendor == "postgresql":
            cursor.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(%s)",
                           [[f"{table}_count_{event}" for table, _, event, _ in _PG_TRIGGERS]])
            return bool(cursor.fetchone()[0] == len(_PG_TRIGGERS))
        if conn.vendor == "sqlite":
            marks = ", ".join(["%s"] * len(_SQLITE_TRIGGER_NAMES))
            cursor.execute(f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
                           _SQLITE_TRIGGER_NAMES)
            return bool(cursor.fetchone()[0] == len(_SQLITE_TRIGGER_NAMES))
        return None


@receiver(post_migrate)
def _ensure_installed(sender: Any, app_config: Any = None, using: str = DEFAULT_DB_ALIAS,
                      **kwargs: Any) -> None:
    """After ``migrate`` (and ``flush``, which sends the same signal):

    - triggers missing while their tables exist are put back, and the counters
      reconciled. Migration 0009 installs them; this is for tables made without
      migrations (pytest-django's ``--nomigrations`` creates them from the
      models) or triggers dropped by hand;
    - counter rows left while both tables are empty are deleted. ``flush`` on
      SQLite empties table after table with DELETE: when it empties the counter
      table before the dispatches, their DELETE triggers leave negative counts
      behind (a TransactionTestCase's teardown did this to the next test).
      Checking costs two single-row reads, not a count.
    """
    if app_config is None or app_config.label != "dispatcher":
        return
    conn = connections[using]
    state = installed(conn)
    if state is False:
        logger.warning("counter triggers missing on %s: installing them and reconciling the counts", using)
        with transaction.atomic(using=using):
            uninstall(conn)
            install(conn)
        reconcile(using)
    elif state is True:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT (SELECT 1 FROM {DISPATCH} LIMIT 1), (SELECT 1 FROM {ERROR} LIMIT 1), "
                           f"(SELECT 1 FROM {TABLE} LIMIT 1)")
            any_dispatch, any_error, any_count = cursor.fetchone()
            if any_count and not any_dispatch and not any_error:
                cursor.execute(f"DELETE FROM {TABLE}")


# -- the real count ----------------------------------------------------------------------------------
def _count_sql(vendor: str, dispatches: str = DISPATCH, errors: str = ERROR) -> str:
    """Count rows per key the way the triggers do: one GROUP BY over the
    dispatches, one over the errors (joined to their dispatch's messenger)."""
    if vendor == "postgresql":
        day_d, day_e = _PG_DAY.format(t="d"), _PG_DAY.format(t="e")
    else:
        day_d, day_e = "date(d.created)", "date(e.created)"
    status_e = _PG_ERROR_STATUS.format(t="e")
    return (f"SELECT 'dispatch', d.messenger, d.status, {day_d}, count(*) "
            f"FROM {dispatches} d GROUP BY 2, 3, 4 "
            f"UNION ALL "
            f"SELECT 'error', coalesce(d.messenger, ''), {status_e}, {day_e}, count(*) "
            f"FROM {errors} e LEFT JOIN {dispatches} d ON d.id = e.dispatch_id GROUP BY 2, 3, 4")


def real_counts(using: str | None = None) -> dict[Key, int]:
    """Count both tables for real, per (kind, messenger, status, day): a
    scan of each, what :func:`reconcile` compares with."""
    conn = connections[using or DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        cursor.execute(_count_sql(conn.vendor))
        return {(k, m, s, _day(d)): int(n) for k, m, s, d, n in cursor.fetchall()}


def counted(using: str | None = None) -> dict[Key, int]:
    """What the counters say, per (kind, messenger, status, day), zeros left out."""
    conn = connections[using or DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT kind, messenger, status, day, sum(n) FROM {TABLE} GROUP BY 1, 2, 3, 4")
        return {(k, m, s, _day(d)): int(n) for k, m, s, d, n in cursor.fetchall() if n}


def _insert_deltas(cursor: Any, deltas: dict[Key, int]) -> None:
    rows = [(*key, n) for key, n in sorted(deltas.items(), key=lambda item: tuple(map(str, item[0]))) if n]
    if rows:
        cursor.executemany(f"{_INSERT} VALUES (%s, %s, %s, %s, %s)", rows)


def _day(value: Any) -> str:
    """Days as SQLite returns them (text) and PostgreSQL (date) compare alike."""
    return str(value)


@dataclass
class Reconciliation:
    """What :func:`reconcile` found: the keys that were off, and by how much."""

    #: (kind, messenger, status, day) -> correction added (real count - counter)
    corrections: dict[Key, int]

    @property
    def drifted(self) -> bool:
        return bool(self.corrections)


def reconcile(using: str | None = None) -> Reconciliation:
    """Count the tables for real and add the difference to the counters.

    A full scan of both tables (seconds at 10,000,000 rows: the reason it runs
    daily, not per read). It is safe while workers write: the real count and
    the counters are read in one snapshot (one statement on PostgreSQL, under
    SQLite's write lock there), in which every committed change shows both its
    rows and its counter deltas and an uncommitted one shows neither; the
    correction is itself a delta, so what commits meanwhile adds on top.
    """
    conn = connections[using or DEFAULT_DB_ALIAS]
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(
                f"WITH actual AS ({_count_sql('postgresql')}), "
                f"counted AS (SELECT kind, messenger, status, day, sum(n) AS n FROM {TABLE} "
                f"            GROUP BY 1, 2, 3, 4) "
                f"{_INSERT} "
                f"SELECT coalesce(c.kind, a.kind), coalesce(c.messenger, a.messenger), "
                f"coalesce(c.status, a.status), coalesce(c.day, a.day), coalesce(a.n, 0) - coalesce(c.n, 0) "
                f"FROM (SELECT * FROM actual) AS a (kind, messenger, status, day, n) "
                f"FULL JOIN counted c ON c.kind = a.kind AND c.messenger = a.messenger "
                f"AND c.status = a.status AND c.day = a.day "
                f"WHERE coalesce(a.n, 0) <> coalesce(c.n, 0) "
                f"RETURNING kind, messenger, status, day, n"
            )
            corrections = {(k, m, s, _day(d)): int(n) for k, m, s, d, n in cursor.fetchall()}
        else:
            # SQLite: the atomic block holds the write lock from its start (IMMEDIATE).
            actual, kept = real_counts(conn.alias), counted(conn.alias)
            corrections = {key: n for key in actual.keys() | kept.keys()
                           if (n := actual.get(key, 0) - kept.get(key, 0))}
            _insert_deltas(cursor, corrections)
    if corrections:
        shown = sorted(corrections.items(), key=lambda item: tuple(map(str, item[0])))[:20]
        logger.warning("counters were off for %d keys; corrected: %s", len(corrections),
                       ", ".join(f"{'/'.join(map(str, k))} {n:+d}" for k, n in shown))
    return Reconciliation(corrections)


def partition_deltas(cursor: Any, dispatches: str, errors: str | None) -> None:
    """Subtract what a month's partitions hold, before they are dropped (a
    DROP fires no trigger). Called by :mod:`dispatcher.partitions` in the
    transaction of the DROP, so both commit or neither; it reads the month
    once (the price of dropping instead of deleting row by row, still far
    below a DELETE)."""
    if errors is None:
        sql = (f"SELECT 'dispatch', d.messenger, d.status, {_PG_DAY.format(t='d')}, count(*) "
               f"FROM {dispatches} d GROUP BY 2, 3, 4")
    else:
        sql = _count_sql("postgresql", dispatches, errors)
    cursor.execute(f"{_INSERT} SELECT kind, messenger, status, day, -n "
                   f"FROM ({sql}) AS gone (kind, messenger, status, day, n)")


# -- folding the deltas ------------------------------------------------------------------------------
def compact(using: str | None = None) -> int:
    """Fold each key's delta rows into one (and drop keys at zero), so reads
    stay a GROUP BY over a few thousand rows. Returns the rows removed.

    PostgreSQL: one statement (DELETE ... RETURNING into INSERT of the sums)
    sees one snapshot: a delta committed meanwhile is neither deleted nor
    summed, so none is lost, and workers never wait for it (they only insert).
    An advisory lock keeps a second compaction from running at once."""
    conn = connections[using or DEFAULT_DB_ALIAS]
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [COMPACT_LOCK])
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute(
                f"WITH folded AS (SELECT kind, messenger, status, day FROM {TABLE} GROUP BY 1, 2, 3, 4 "
                f"                HAVING count(*) > 1 OR sum(n) = 0), "
                f"gone AS (DELETE FROM {TABLE} c USING folded f WHERE c.kind = f.kind "
                f"         AND c.messenger = f.messenger AND c.status = f.status AND c.day = f.day "
                f"         RETURNING c.kind, c.messenger, c.status, c.day, c.n), "
                f"kept AS (INSERT INTO {TABLE} (kind, messenger, status, day, n) "
                f"         SELECT kind, messenger, status, day, sum(n) FROM gone GROUP BY 1, 2, 3, 4 "
                f"         HAVING sum(n) <> 0 RETURNING 1) "
                f"SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept)"
            )
            return int(cursor.fetchone()[0])
        # SQLite: the atomic block holds the write lock; triggers keep one row a key anyway.
        cursor.execute(f"SELECT kind, messenger, status, day, sum(n) FROM {TABLE} GROUP BY 1, 2, 3, 4 "
                       f"HAVING count(*) > 1 OR sum(n) = 0")
        folded = cursor.fetchall()
        removed = 0
        for kind, messenger, status, day, n in folded:
            cursor.execute(f"DELETE FROM {TABLE} WHERE kind = %s AND messenger = %s AND status = %s "
                           f"AND day = %s", [kind, messenger, status, day])
            removed += cursor.rowcount
            if n:
                cursor.execute(f"{_INSERT} VALUES (%s, %s, %s, %s, %s)", [kind, messenger, status, day, n])
                removed -= 1
        return removed
