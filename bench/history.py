"""``python -m bench.history``: months of history against the hot path, plain tables vs monthly partitions.

For each size (``--sizes``, default 1,000,000 and 10,000,000 rows of history
spread over ``--months`` months, 6), in a PostgreSQL database of its own
(``HISTORY_DATABASE_URL``, default ``.../dispatcher_history_bench``, created
and dropped by the run unless ``--keep``):

1. every app migrated, the dispatcher to 0005: today's plain tables;
2. filled with SQL: N dispatches (95 % sent, 3 % failed, 2 % cancelled; error
   rows: 3 per failed, 1 per 20th sent), one message per 1,000, and a live
   backlog in the current month (20,000 pending with a live task, 2,000
   pending and 1,000 errors whose task is lost, 1,000 expired and 1,000 live
   leases); VACUUM ANALYZE; the sizes;
3. a copy of those plain tables (every index, the foreign keys), then
   migration 0006 (timed) and VACUUM ANALYZE;
4. the hot path's queries on both layouts in turns (the models pointed at one
   or the other), each through the engine's own ORM code in a transaction
   rolled back, so every repetition sees the same rows: a claim of 100 ids, a
   batch (claim, read back, outcome writes), one insert, error rows, the
   requeue and lease sweeps' queries, a fan-out of 1,000 (COPY); median, p95,
   and the buffers of the claim;
5. the design check (first size; ``--no-compare-created`` skips it): the same
   claim on the rows partitioned by ``created`` instead of ``id``;
6. VACUUM (INDEX_CLEANUP ON) after 50,000 deliveries: the plain table, or
   this month's partition (what autovacuum works on in each case);
7. retiring the oldest month: ``cleanup_sent`` on the plain copy (DELETE, then
   VACUUM), and the partition sweep's DROP;
8. the capacity figures: heap and index writes per dispatch, PostgreSQL CPU
   per dispatch (the backend's own utime + stime) in a lifecycle run (fan-out
   by COPY, claims of 500, outcomes flushed every 20 as the engine does) by 1
   and 2 processes, and WAL per statement (EXPLAIN (ANALYZE, WAL)).

Prints a table and writes ``var/bench/history.json``. Not part of ``make
bench``: about 5 minutes at 1M and 20 at 10M on two cores, and 6 GB of disk
at 10M. See docs/performance.md, "History", and docs/deployment.md, "Capacity".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

URL = os.environ.get("HISTORY_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatcher_history_bench")
os.environ["DATABASE_URL"] = URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import dj_database_url  # noqa: E402
import django  # noqa: E402
import psycopg  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402
from django.db.models import Q  # noqa: E402
from django.utils import timezone  # noqa: E402

from dispatcher import partitions  # noqa: E402
from dispatcher.bulk import create_dispatches  # noqa: E402
from dispatcher.delivery import claim  # noqa: E402
from dispatcher.models import Dispatch, DispatchError, Message  # noqa: E402
from dispatcher.sweeps import CHUNK, cleanup_sent  # noqa: E402

CONF = dj_database_url.parse(URL)
BEFORE, AFTER = "0007_beyond", "0008_partitioned_history"
TICK = os.sysconf("SC_CLK_TCK")


def log(*args: Any) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


# -- the database ------------------------------------------------------------------------------------
def admin() -> psycopg.Connection:
    return psycopg.connect(host=CONF["HOST"], port=CONF["PORT"] or 5432, user=CONF["USER"],
                           password=CONF["PASSWORD"] or None, dbname="postgres", autocommit=True)


def recreate_database() -> None:
    connection.close()
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{CONF["NAME"]}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{CONF["NAME"]}"')


def drop_database() -> None:
    connection.close()
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{CONF["NAME"]}" WITH (FORCE)')


def sql(statement: str, params: Any = None) -> list[tuple]:
    """One statement; ``%%`` is a literal ``%`` whether or not it has parameters."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def vacuum(table: str = "", analyze: bool = True) -> float:
    started = time.perf_counter()
    sql(f"VACUUM {'ANALYZE ' if analyze else ''}{table}")
    return time.perf_counter() - started


# -- filling -------------------------------------------------------------------------------------------
def fill(n: int, months: int, now: datetime) -> dict[str, Any]:
    """N dispatches of history from the start of the month ``months - 1`` back
    until an hour ago, in id order, and the live backlog of today."""
    first_month = partitions.add_months(partitions.month_of(now), -(months - 1))
    start = datetime(first_month.year, first_month.month, 1, tzinfo=UTC)
    messages = n // 1000
    step = (now - timedelta(hours=1) - start) / messages
    started = time.perf_counter()
    sql("INSERT INTO dispatcher_message (message_type, context, priority, created) "
        "SELECT 'email_plain', '{\"subject\": \"Newsletter\", \"text\": \"Hello, our news.\"}'::jsonb, "
        "0, %s + (g - 1) * %s FROM generate_series(1, %s) g", [start, step, messages])
    for lo in range(1, n + 1, 1_000_000):
        hi = min(n, lo + 999_999)
        sql("""
            INSERT INTO dispatcher_dispatch (message_id, messenger, recipient_id, address, status, attempts,
                next_attempt_at, queued_at, dispatched_at, result, created)
            SELECT (g - 1) / 1000 + 1, CASE WHEN g %% 5 = 0 THEN 'sms' ELSE 'smtp' END, NULL,
                'user' || g || '@example.org',
                CASE WHEN g %% 100 < 95 THEN 'sent' WHEN g %% 100 < 98 THEN 'failed' ELSE 'cancelled' END,
                CASE WHEN g %% 100 < 95 THEN 1 WHEN g %% 100 < 98 THEN 8 ELSE 0 END,
                c, c, CASE WHEN g %% 100 < 95 THEN c + interval '30 seconds' END,
                CASE WHEN g %% 100 < 95 THEN jsonb_build_object('id', 'pm-' || md5(g::text)) END, c
            FROM (SELECT g, %s + ((g - 1) / 1000) * %s AS c FROM generate_series(%s, %s) g) s
        """, [start, step, lo, hi])
        log(f"  {hi:,} rows")
    sql("""
        INSERT INTO dispatcher_dispatcherror (dispatch_id, attempt, error_class, text, permanent, created)
        SELECT d.id, a, 'TemporaryError', '421 4.7.0 mx.example.org: try again later (attempt ' || a || ')',
               d.status = 'failed' AND a = 3, d.created + a * interval '1 minute'
        FROM dispatcher_dispatch d CROSS JOIN generate_series(1, 3) a WHERE d.status = 'failed'
        UNION ALL
        SELECT d.id, 1, 'TemporaryError', '421 4.7.0 mx.example.org: try again later', false, d.created
        FROM dispatcher_dispatch d WHERE d.status = 'sent' AND d.id %% 20 = 0
    """)
    backlog = Message.objects.create(message_type="email_plain", context={"subject": "Now", "text": "now"})
    recent = now - timedelta(minutes=1)
    for count, status, queued, lease in (
        # a fan-out being delivered: live tasks (queued a day ahead: never stale during the run)
        (20_000, "pending", now + timedelta(days=1), None),
        (2_000, "pending", None, None),                      # tasks the broker lost
        (1_000, "error", None, None),                        # retries that became due
        (1_000, "processing", now, recent),                  # leases of dead workers
        (1_000, "processing", now, now + timedelta(minutes=5)),  # batches in flight
    ):
        sql("""
            INSERT INTO dispatcher_dispatch (message_id, messenger, address, status, attempts,
                next_attempt_at, queued_at, lease_expires_at, claim_token, created)
            SELECT %s, 'smtp', 'live' || g || '@example.org', %s, %s, %s, %s, %s,
                   CASE WHEN %s = 'processing' THEN gen_random_uuid() END, %s
            FROM generate_series(1, %s) g
        """, [backlog.pk, status, 0 if status == "pending" else 1, recent, queued, lease, status, recent,
              count])
    took = time.perf_counter() - started
    log(f"  filled in {took:.0f} s; VACUUM ANALYZE")
    vacuum()
    return {"fill_s": round(took, 1), "start": start.isoformat()}


def sizes() -> dict[str, Any]:
    """Bytes of each table (heap, indexes, TOAST) and of each index, partitions summed."""
    rows = sql("""
        SELECT CASE WHEN c.relname LIKE 'dispatcher_dispatcherror%%' THEN 'dispatcher_dispatcherror'
                    ELSE 'dispatcher_dispatch' END,
               sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid)), sum(c.reltuples)
        FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'dispatcher_dispatch%%' GROUP BY 1
    """)
    out: dict[str, Any] = {t: {"table_bytes": int(h), "index_bytes": int(i), "rows": int(r)}
                           for t, h, i, r in rows}
    # Index sizes by the parent index's name (partitions' indexes attached to it).
    for name, size in sql("""
        SELECT coalesce(parent.relname, i.relname), sum(pg_relation_size(i.oid))
        FROM pg_class i JOIN pg_index x ON x.indexrelid = i.oid JOIN pg_class t ON t.oid = x.indrelid
        LEFT JOIN pg_inherits h ON h.inhrelid = i.oid LEFT JOIN pg_class parent ON parent.oid = h.inhparent
        WHERE t.relname LIKE 'dispatcher_dispatch%%' AND t.relname NOT LIKE 'dispatcher_dispatcherror%%'
          AND t.relkind = 'r' GROUP BY 1 ORDER BY 2 DESC
    """):
        out.setdefault("dispatch_indexes", {})[name] = int(size)
    return out


# -- the hot path --------------------------------------------------------------------------------------
#: variant -> (dispatch table, error table). "plain" is a copy of today's tables
#: (migration 0005: one table each, the same indexes, the foreign keys) made
#: before migrating; the engine's ORM code runs on either by pointing the
#: models at it, so both are measured in turns, under the same load.
VARIANTS = {"plain": ("bench_plain_dispatch", "bench_plain_dispatcherror"),
            "partitioned": ("dispatcher_dispatch", "dispatcher_dispatcherror")}


def _point(dispatch_table: str, error_table: str) -> None:
    Dispatch._meta.db_table, DispatchError._meta.db_table = dispatch_table, error_table
    for model in (Dispatch, DispatchError):
        for f in model._meta.concrete_fields:
            f.__dict__.pop("cached_col", None)  # a Col remembers its table


@contextmanager
def tables(variant: str) -> Iterator[None]:
    saved = Dispatch._meta.db_table, DispatchError._meta.db_table
    _point(*VARIANTS[variant])
    try:
        yield
    finally:
        _point(*saved)


def make_plain_twin() -> float:
    """Copy today's plain tables (still at 0005) to bench_plain_*, with every
    index, the identity, and the foreign keys."""
    started = time.perf_counter()
    for table, twin in (("dispatcher_dispatch", "bench_plain_dispatch"),
                        ("dispatcher_dispatcherror", "bench_plain_dispatcherror")):
        sql(f"CREATE TABLE {twin} (LIKE {table} INCLUDING ALL)")
        sql(f"INSERT INTO {twin} SELECT * FROM {table}")
        sql(f"SELECT setval(pg_get_serial_sequence('{twin}', 'id'), (SELECT max(id) FROM {twin}))")
    sql("ALTER TABLE bench_plain_dispatch ADD FOREIGN KEY (message_id) REFERENCES dispatcher_message (id) "
        "DEFERRABLE INITIALLY DEFERRED")
    sql("ALTER TABLE bench_plain_dispatch ADD FOREIGN KEY (recipient_id) REFERENCES auth_user (id) "
        "DEFERRABLE INITIALLY DEFERRED")
    sql("ALTER TABLE bench_plain_dispatcherror ADD FOREIGN KEY (dispatch_id) "
        "REFERENCES bench_plain_dispatch (id) DEFERRABLE INITIALLY DEFERRED")
    return time.perf_counter() - started


def interleaved(ops: dict[str, Callable[[], Any]], reps: int, variants: list[str]) -> dict[str, Any]:
    """Each op ``reps`` times per variant, the variants in a random order each
    time (after 5 warm-up rounds); median and p95 in ms."""
    out: dict[str, Any] = {}
    for name, op in ops.items():
        # The rolled-back writes of the op before leave dead row versions and index
        # entries behind: each op starts from clean tables, every variant alike.
        for variant in variants:
            for table in VARIANTS[variant]:
                vacuum(table, analyze=False)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(reps + 5):
            for variant in random.sample(variants, len(variants)):
                with tables(variant):
                    started = time.perf_counter()
                    op()
                    took = (time.perf_counter() - started) * 1000
                if rep >= 5:
                    times[variant].append(took)
        for variant, ts in times.items():
            ts.sort()
            out.setdefault(name, {})[variant] = {"median_ms": round(statistics.median(ts), 3),
                                                  "p95_ms": round(ts[int(len(ts) * 0.95)], 3)}
        log(f"  {name}: " + ", ".join(f"{v} {out[name][v]['median_ms']} ms" for v in variants))
    return out


@contextmanager
def rolled_back() -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def hot_path(reps: int) -> dict[str, Any]:
    held = list(Dispatch.objects.filter(status="pending", queued_at__isnull=False, messenger="smtp",
                                        address__startswith="live").order_by("id")
                .values_list("pk", flat=True))
    message = Message.objects.filter(message_type="email_plain").order_by("-id").first()
    assert message is not None and len(held) >= 20_000
    batches = [held[i:i + 100] for i in range(0, len(held), 100)]

    def claim_batch() -> None:
        ids, token = random.choice(batches), uuid.uuid4()
        with rolled_back():
            assert claim("smtp", ids, token) == len(ids)

    def claim_read_write() -> None:
        """What a batch of 100 costs the database: claim, read back, outcomes."""
        ids, token, now = random.choice(batches), uuid.uuid4(), timezone.now()
        with rolled_back():
            claim("smtp", ids, token)
            rows = list(Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING)
                        .select_related("recipient").order_by("message_id", "id"))
            owned = Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING)
            for i in range(0, len(rows), 20):  # flushed every DISPATCHER_FLUSH_EVERY
                owned.filter(pk__in=[d.pk for d in rows[i:i + 20]]).update(
                    status=Dispatch.Status.SENT, dispatched_at=now, lease_expires_at=None, claim_token=None)

    def requeue_query() -> None:
        now = timezone.now()
        stale = now - timedelta(seconds=settings.DISPATCHER_REQUEUE_AFTER)
        rows = list(Dispatch.objects.filter(status__in=Dispatch.CLAIMABLE, next_attempt_at__lte=now)
                    .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=stale)).order_by("next_attempt_at")
                    .values_list("messenger", "pk", "message__priority")[:CHUNK * 10])
        assert len(rows) == 3000, len(rows)

    def reclaim_query() -> None:
        with rolled_back():
            rows = list(Dispatch.objects.filter(status=Dispatch.Status.PROCESSING,
                                                lease_expires_at__lt=timezone.now())
                        .select_for_update(skip_locked=True, of=("self",))
                        .values_list("pk", "attempts", "message__message_type")[:CHUNK])
            assert len(rows) == 1000, len(rows)

    def insert_one() -> None:
        with rolled_back():
            Dispatch.objects.create(message=message, messenger="smtp", address="one@example.org",
                                    queued_at=timezone.now())

    targets = [("smtp", f"fan{i}@example.org", None) for i in range(1000)]

    def fan_out() -> None:
        now = timezone.now()
        with rolled_back():
            create_dispatches(message, targets, now, now, now)

    def errors_write() -> None:
        with rolled_back():
            DispatchError.objects.bulk_create([
                DispatchError(dispatch_id=pk, attempt=1, error_class="TemporaryError", text="421 try later")
                for pk in random.choice(batches)[:20]])

    variants = list(VARIANTS)
    out = interleaved({"claim of 100 ids": claim_batch,
                       "batch of 100: claim, read back, 5 outcome writes": claim_read_write,
                       "insert one dispatch": insert_one,
                       "20 error rows": errors_write}, reps, variants)
    out.update(interleaved({"requeue sweep query (3,000 due)": requeue_query,
                            "lease sweep query (1,000 expired)": reclaim_query,
                            "fan-out of 1,000 (COPY)": fan_out}, max(30, reps // 5), variants))
    for variant in variants:
        with tables(variant):
            out.setdefault("claim plan", {})[variant] = _claim_plan(held[:100])
    return out


def _claim_plan(ids: list[int]) -> dict[str, Any]:
    plan = explain(f"UPDATE {Dispatch._meta.db_table} SET status = 'processing', attempts = attempts + 1 "
                   "WHERE id = ANY(%s) AND messenger = 'smtp' AND status IN ('pending', 'error') "
                   "AND next_attempt_at <= now()", [ids])
    return {"planning_ms": round(plan["Planning Time"], 3), "execution_ms": round(plan["Execution Time"], 3),
            "shared_hit_blocks": plan["Plan"]["Shared Hit Blocks"]}


def explain(statement: str, params: list[Any]) -> dict[str, Any]:
    """Plan, buffers and WAL of one statement (run in a transaction rolled back)."""
    with rolled_back(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) {statement}", params)
        return cursor.fetchone()[0][0]


def vacuum_after_delivery(n: int = 50_000) -> dict[str, Any]:
    """Deliver ``n`` new dispatches on each variant (2n dead row versions, as
    in production), then VACUUM what autovacuum would: the whole plain table,
    or only the partition of this month. Index vacuuming reads every index of
    the table vacuumed, so on plain tables it grows with the history."""
    out: dict[str, Any] = {}
    with connection.cursor() as cursor:
        this = partitions.month_of(timezone.now())
        current = [p for p in partitions.list_partitions(cursor) if p.month == this]
    for variant in ("plain", "partitioned"):
        with tables(variant):
            lifecycle(n)
        table = VARIANTS["plain"][0] if variant == "plain" else current[0].name
        # INDEX_CLEANUP ON: what autovacuum does once enough pages hold dead rows
        # (below 2 % of the pages, PostgreSQL 15 puts the index pass off to a later run).
        started = time.perf_counter()
        sql(f"VACUUM (INDEX_CLEANUP ON) {table}")
        out[variant] = {"table": table, "vacuum_s": round(time.perf_counter() - started, 2)}
        log(f"  VACUUM {table} after {n:,} deliveries: {out[variant]['vacuum_s']} s")
    return out


# -- retiring a month ----------------------------------------------------------------------------------
def month_cutoff_days(month_index: int, start: datetime) -> int:
    """``days`` for which the cutoff falls less than a day into month
    ``month_index`` (0 = the oldest): every month before it is past retention."""
    month = partitions.add_months(partitions.month_of(start), month_index)
    return (timezone.now() - datetime(month.year, month.month, 1, tzinfo=UTC)).days


def retire_plain(start: datetime) -> dict[str, Any]:
    """The oldest month's sent rows, the way it is done on plain tables: cleanup_sent."""
    days = month_cutoff_days(1, start)
    cutoff = timezone.now() - timedelta(days=days)
    with tables("plain"):
        rows = Dispatch.objects.filter(status="sent", dispatched_at__lt=cutoff).count()
        # cleanup_sent as on a database without partitions
        real = partitions.dropped_whole
        partitions.dropped_whole = lambda *args, **kwargs: None  # type: ignore[assignment]
        try:
            started = time.perf_counter()
            deleted = cleanup_sent(days=days)
            took = time.perf_counter() - started
        finally:
            partitions.dropped_whole = real  # type: ignore[assignment]
    assert deleted == rows, (deleted, rows)
    vacuumed = vacuum(VARIANTS["plain"][0], analyze=False) + vacuum(VARIANTS["plain"][1], analyze=False)
    return {"how": "cleanup_sent (DELETE, 1,000 a chunk, ORM cascade), then VACUUM", "rows": deleted,
            "delete_s": round(took, 1), "vacuum_s": round(vacuumed, 1), "rows_per_s": round(deleted / took)}


def retire_partitioned(start: datetime) -> dict[str, Any]:
    """The same month by the partition sweep: a DROP of its two partitions."""
    days = month_cutoff_days(1, start)
    with connection.cursor() as cursor:
        oldest = [p for p in partitions.list_partitions(cursor) if p.month is not None][0]
    rows = sql(f"SELECT count(*) FROM {oldest.name}")[0][0]
    errors = sql(f"SELECT count(*) FROM {partitions.ERROR + oldest.suffix}")[0][0]
    started = time.perf_counter()
    report = partitions.maintain(days=days)
    took = time.perf_counter() - started
    assert report.dropped == [oldest.name], report
    return {"how": "dispatcher_partitions (DROP of the month's two partitions)", "rows": rows,
            "error_rows": errors, "maintain_s": round(took, 3)}


# -- the design check: partitioned by created ------------------------------------------------------------
def compare_created(reps: int) -> dict[str, Any]:
    """The same rows partitioned by ``created`` (PK (id, created)), as the
    usual recipe would have it: a claim by ids then probes every month's
    primary key instead of one month's."""
    with connection.cursor() as cursor:
        months = sorted({p.month for p in partitions.list_partitions(cursor) if p.month is not None})
    sql("DROP TABLE IF EXISTS bench_by_created")
    sql("CREATE TABLE bench_by_created (LIKE dispatcher_dispatch INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (created)")
    for month in months:
        nxt = partitions.add_months(month, 1)
        sql(f"CREATE TABLE bench_by_created_{month:%Y%m} PARTITION OF bench_by_created "
            f"FOR VALUES FROM ('{month}') TO ('{nxt}')")
    sql("CREATE TABLE bench_by_created_default PARTITION OF bench_by_created DEFAULT")
    sql("INSERT INTO bench_by_created SELECT * FROM dispatcher_dispatch")
    sql("ALTER TABLE bench_by_created ADD PRIMARY KEY (id, created)")
    # Every other index of the shipped table, so an update writes as many index entries.
    for (definition,) in sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'dispatcher_dispatch' "
                             "AND indexname <> 'dispatcher_dispatch_pkey'"):
        sql(definition.replace("CREATE INDEX ", "CREATE INDEX bench_", 1)
            .replace(" ON ONLY public.dispatcher_dispatch ", " ON bench_by_created ")
            .replace(" ON public.dispatcher_dispatch ", " ON bench_by_created "))
    sql("VACUUM ANALYZE bench_by_created")
    held = [r[0] for r in sql("SELECT id FROM dispatcher_dispatch WHERE status = 'pending' "
                              "AND queued_at IS NOT NULL AND address LIKE 'live%%' ORDER BY id")]
    claim_sql = ("UPDATE {table} SET status = 'processing', claim_token = %s, attempts = attempts + 1, "
                 "lease_expires_at = now() + interval '5 minutes' WHERE id = ANY(%s) AND messenger = 'smtp' "
                 "AND ((status IN ('pending', 'error') AND next_attempt_at <= now()) "
                 "OR (status = 'processing' AND claim_token = %s))")
    VARIANTS["by created"] = ("bench_by_created", "dispatcher_dispatcherror")

    def run() -> None:
        start, token = random.randrange(0, len(held) - 100), uuid.uuid4()
        with rolled_back():
            sql(claim_sql.format(table=Dispatch._meta.db_table), [token, held[start:start + 100], token])

    try:
        out = interleaved({"claim of 100 ids (SQL)": run}, reps, ["partitioned", "by created"])
        out["partitions"] = len(months) + 1
        with tables("by created"):
            out["claim plan, by created"] = _claim_plan(held[:100])
    finally:
        del VARIANTS["by created"]
        sql("DROP TABLE bench_by_created")
    return out


# -- capacity: what one dispatch costs the database ------------------------------------------------------
def backend_cpu() -> float:
    """CPU seconds (user + system) of this connection's PostgreSQL backend."""
    pid = sql("SELECT pg_backend_pid()")[0][0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def table_counters() -> dict[str, int]:
    sql("SELECT pg_stat_clear_snapshot()")
    [(ins, upd, hot)] = sql("SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_hot_upd) "
                            "FROM pg_stat_user_tables WHERE relname LIKE 'dispatcher_dispatch%%' "
                            "AND relname NOT LIKE '%%error%%'")
    return {"ins": int(ins or 0), "upd": int(upd or 0), "hot": int(hot or 0)}


def lifecycle(n: int, batch: int = 500, flush_every: int = 20, first_id: int | None = None) -> dict[str, Any]:
    """Fan out ``n`` dispatches (COPY, one transaction), then claim them ``batch``
    at a time and write their outcomes ``flush_every`` at a time, as a worker
    does (no network: the database's share of a dispatch)."""
    message = Message.objects.create(message_type="email_plain", context={"subject": "S", "text": "T"})
    now = timezone.now()
    cpu0, t0 = backend_cpu(), time.perf_counter()
    with transaction.atomic():
        ids = [d.pk for d in create_dispatches(message, [("smtp", f"cap{i}@example.org", None)
                                                         for i in range(n)], now, now, now)]
    cpu1, t1 = backend_cpu(), time.perf_counter()
    for start in range(0, n, batch):
        chunk = ids[start:start + batch]
        token = uuid.uuid4()
        claim("smtp", chunk, token)
        rows = list(Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING)
                    .order_by("message_id", "id"))
        for i in range(0, len(rows), flush_every):
            with transaction.atomic():
                Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING,
                                        pk__in=[d.pk for d in rows[i:i + flush_every]]).update(
                    status=Dispatch.Status.SENT, dispatched_at=timezone.now(), lease_expires_at=None,
                    claim_token=None)
    cpu2, t2 = backend_cpu(), time.perf_counter()
    return {"n": n, "insert_s": t1 - t0, "deliver_s": t2 - t1, "insert_cpu_s": cpu1 - cpu0,
            "deliver_cpu_s": cpu2 - cpu1}


def _lifecycle_child(n: int, queue: Any) -> None:
    connection.close()
    queue.put(lifecycle(n))


def capacity(n: int = 100_000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lifecycle(5_000)  # warm-up
    connection.close()  # a backend reports its table counters for sure when it exits
    time.sleep(0.5)
    before = table_counters()
    single = lifecycle(n)
    connection.close()
    time.sleep(0.5)
    after = table_counters()
    out["per_dispatch_rows"] = {k: round((after[k] - before[k]) / n, 3) for k in before}
    out["one_process"] = {
        "dispatches_per_s": round(n / (single["insert_s"] + single["deliver_s"])),
        "pg_cpu_us_per_dispatch_insert": round(single["insert_cpu_s"] / n * 1e6, 1),
        "pg_cpu_us_per_dispatch_claim_and_outcome": round(single["deliver_cpu_s"] / n * 1e6, 1),
        "wall_us_per_dispatch": round((single["insert_s"] + single["deliver_s"]) / n * 1e6, 1),
    }
    connection.close()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_lifecycle_child, args=(n, queue)) for _ in range(2)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    runs = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    cpu = sum(r["insert_cpu_s"] + r["deliver_cpu_s"] for r in runs)
    out["two_processes"] = {"dispatches_per_s": round(2 * n / wall),
                            "pg_cpu_us_per_dispatch": round(cpu / (2 * n) * 1e6, 1)}

    # WAL and buffers of each statement of a dispatch's life, for a batch like the engine's.
    message = Message.objects.create(message_type="email_plain", context={"subject": "S", "text": "T"})
    now = timezone.now()
    with transaction.atomic():
        ids = [d.pk for d in create_dispatches(message, [("smtp", f"wal{i}@example.org", None)
                                                         for i in range(500)], now, now, now)]
    token = uuid.uuid4()
    wal = {}
    insert = explain("INSERT INTO dispatcher_dispatch (message_id, messenger, address, status, attempts, "
                     "next_attempt_at, queued_at, created) SELECT %s, 'smtp', 'w' || g || '@example.org', "
                     "'pending', 0, now(), now(), now() FROM generate_series(1, 500) g", [message.pk])
    wal["insert (500 rows)"] = insert
    with transaction.atomic():
        claim("smtp", ids, token)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) UPDATE dispatcher_dispatch "
                           "SET status = 'sent', dispatched_at = now(), lease_expires_at = NULL, "
                           "claim_token = NULL WHERE claim_token = %s AND status = 'processing' "
                           "AND id = ANY(%s)",
                           [token, ids[:20]])
            wal["outcome write (20 rows)"] = cursor.fetchone()[0][0]
        transaction.set_rollback(True)
    wal["claim (500 ids)"] = explain(
        "UPDATE dispatcher_dispatch SET attempts = attempts + 1, status = 'processing', claim_token = %s, "
        "lease_expires_at = now() + interval '5 minutes' WHERE id = ANY(%s) AND messenger = 'smtp' AND "
        "status IN ('pending', 'error') AND next_attempt_at <= now()", [token, ids])
    out["wal"] = {}
    for name, plan in wal.items():
        rows = int(name.split("(")[1].split()[0])
        out["wal"][name] = {"wal_bytes_per_row": round(plan["Plan"]["WAL Bytes"] / rows),
                            "wal_records_per_row": round(plan["Plan"]["WAL Records"] / rows, 2),
                            "full_page_images": plan["Plan"]["WAL FPI"],
                            "ms": round(plan["Execution Time"], 2)}
    return out


# -- main ----------------------------------------------------------------------------------------------------
def run_size(n: int, months: int, reps: int, compare: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"rows": n, "months": months}
    log(f"== {n:,} rows of history over {months} months")
    recreate_database()
    executor = MigrationExecutor(connection)  # every app at its latest, the dispatcher at 0005
    executor.migrate([*(leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] != "dispatcher"),
                      ("dispatcher", BEFORE)])
    assert not partitions.is_partitioned()
    now = timezone.now()
    result.update(fill(n, months, now))
    start = datetime.fromisoformat(result["start"])
    result["sizes_plain"] = sizes()
    log("copy of the plain tables")
    result["plain_copy_s"] = round(make_plain_twin(), 1)
    result["migrated_rows"] = sql("SELECT count(*) FROM dispatcher_dispatch")[0][0]
    log("migrate to 0006")
    started = time.perf_counter()
    call_command("migrate", "dispatcher", AFTER, verbosity=0)
    result["migration_s"] = round(time.perf_counter() - started, 1)
    log(f"  {result['migration_s']} s")
    result["vacuum_analyze_s"] = round(vacuum(), 1)
    result["sizes_partitioned"] = sizes()
    log("hot path, plain and partitioned in turns")
    result["hot_path"] = hot_path(reps)
    if compare:
        log("design check: partitioned by created")
        result["by_created"] = compare_created(reps)
    log("vacuum after deliveries")
    result["vacuum_after_delivery"] = vacuum_after_delivery()
    log("retire the oldest month: plain (cleanup_sent)")
    result["retire_plain"] = retire_plain(start)
    log(f"  {result['retire_plain']}")
    log("retire the oldest month: partitioned (DROP)")
    result["retire_partitioned"] = retire_partitioned(start)
    log(f"  {result['retire_partitioned']}")
    sql("DROP TABLE bench_plain_dispatcherror, bench_plain_dispatch")
    log("capacity")
    vacuum()
    result["capacity"] = capacity()
    return result


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    settings_rows = sql("SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                        "('shared_buffers', 'work_mem', 'max_wal_size', 'synchronous_commit', 'wal_level', "
                        "'checkpoint_timeout')")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem, "python": platform.python_version(),
            "postgresql": sql("SHOW server_version")[0][0],
            "pg_settings": dict(settings_rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--no-compare-created", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database after the run")
    args = parser.parse_args()
    out_path = Path(settings.VAR_DIR) / "bench" / "history.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"when": timezone.now().isoformat(timespec="seconds"), "runs": []}
    try:
        recreate_database()
        results["machine"] = machine()
        for i, n in enumerate(int(s) for s in args.sizes.split(",")):
            compare = i == 0 and not args.no_compare_created
            results["runs"].append(run_size(n, args.months, args.reps, compare))
            out_path.write_text(json.dumps(results, indent=2, default=str))
    finally:
        if not args.keep:
            drop_database()
    report(results)
    print(f"\nwritten to {out_path}")
    return 0


def report(results: dict[str, Any]) -> None:
    for run in results["runs"]:
        print(f"\n{run['rows']:,} rows of history, {run['months']} months")
        print(f"{'query':50} {'plain median / p95 ms':>24} {'partitioned median / p95 ms':>30}")
        for name, by in run["hot_path"].items():
            if name == "claim plan":
                continue
            plain, part = by["plain"], by["partitioned"]
            print(f"{name:50} {plain['median_ms']:>11.3f} / {plain['p95_ms']:<10.3f} "
                  f"{part['median_ms']:>15.3f} / {part['p95_ms']:<10.3f}")
        rp, rq = run["retire_plain"], run["retire_partitioned"]
        print(f"retire the oldest month: DELETE of {rp['rows']:,} sent rows {rp['delete_s']} s "
              f"+ VACUUM {rp['vacuum_s']} s; DROP of {rq['rows']:,} rows + {rq['error_rows']:,} errors "
              f"{rq['maintain_s']} s")
        print(f"migration 0006 of {run['migrated_rows']:,} rows: {run['migration_s']} s")
        va = run["vacuum_after_delivery"]
        print(f"VACUUM after 50,000 deliveries: plain table {va['plain']['vacuum_s']} s, "
              f"this month's partition {va['partitioned']['vacuum_s']} s")
        if "by_created" in run:
            print("design check:", json.dumps(run["by_created"]))
        print("capacity:", json.dumps(run["capacity"], indent=1))


if __name__ == "__main__":
    sys.exit(main())
