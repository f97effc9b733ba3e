"""Monthly partitions of the dispatch history on PostgreSQL (dispatcher.partitions).

Two databases: the suite's own (created by migrating, so partitioned like
every test that runs on it), and a scratch database of this module's, created
here and dropped after: migrated to 0005 (today's schema), filled through the
ORM with months of history, migrated forward, and then aged by the sweep.
Marked ``partitioning`` (PostgreSQL only), deselected on the embedded profile;
the command's own test runs on both profiles.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from dispatcher import partitions
from dispatcher.bulk import create_dispatches
from dispatcher.models import DeliveryReceipt, Dispatch, DispatchError, Message, Suppression
from dispatcher.partitions import DISPATCH, ERROR, add_months, month_of, partition_name
from dispatcher.sweeps import cleanup_sent, maintain_partitions
from tests.counting import assert_counters_exact

#: PostgreSQL only; deselected on the embedded profile (SQLite). The command's test runs on both.
partitioning = pytest.mark.partitioning

BEFORE = ("dispatcher", "0007_beyond")
AFTER = ("dispatcher", "0008_partitioned_history")
#: 0009: the counters, filled from the rows already there.
LATEST = ("dispatcher", "0009_counters")
STATES = ["sent", "sent", "sent", "failed", "cancelled", "error", "pending", "processing"]


def _require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.fail("partitioning is PostgreSQL's: run this on the services profile")


def where(pk: int, table: str = DISPATCH, column: str = "id", conn: Any = None) -> str:
    """The partition a row is stored in."""
    with (conn or connection).cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s", [pk])
        return cursor.fetchone()[0]


def current_partition() -> str:
    return partition_name(DISPATCH, month_of(timezone.now()))


# -- the suite's database ---------------------------------------------------------------------------
@partitioning
@pytest.mark.django_db
def test_the_suite_runs_on_the_partitioned_schema():
    _require_postgresql()
    assert partitions.is_partitioned()
    with connection.cursor() as cursor:
        names = [p.name for p in partitions.list_partitions(cursor)]
        error_names = [p.name for p in partitions.list_partitions(cursor, ERROR)]
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [DISPATCH])
        indexes = dict(cursor.fetchall())
        cursor.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'p' AND "
                       "conrelid IN (to_regclass(%s), to_regclass(%s)) ORDER BY conrelid::regclass::text",
                       [DISPATCH, ERROR])
        keys = [row[0] for row in cursor.fetchall()]
    this = month_of(timezone.now())
    assert names[-1] == f"{DISPATCH}_default"
    assert {partition_name(DISPATCH, add_months(this, i)) for i in range(3)} <= set(names)
    assert error_names == [n.replace(DISPATCH, ERROR) for n in names]
    # The partial indexes are the partitioned table's, so every month has them.
    assert "WHERE" in indexes["dispatch_requeue_idx"] and "WHERE" in indexes["dispatch_failures_idx"]
    assert "WHERE" in indexes["dispatch_sent_idx"] and "WHERE" in indexes["dispatch_skipped_idx"]
    # A batch finds its rows by primary key: no lease or claim-token index to keep.
    assert "dispatch_lease_idx" not in indexes and "dispatch_claim_idx" not in indexes
    assert keys == ["PRIMARY KEY (id)", "PRIMARY KEY (id, dispatch_id)"]


@partitioning
@pytest.mark.django_db
def test_inserts_land_in_this_months_partition():
    _require_postgresql()
    message = Message.objects.create(message_type="plain")
    now = timezone.now()
    one = Dispatch.objects.create(message=message, messenger="smtp", address="a@example.org")
    few = create_dispatches(message, [("smtp", f"b{i}@example.org", None) for i in range(3)], now, None, now)
    many = create_dispatches(message, [("smtp", f"c{i}@x.org", None) for i in range(60)], now, None, now)
    error = DispatchError.objects.create(dispatch=many[-1], attempt=1, error_class="X", text="boom")
    # ORM create, bulk_create (few rows) and COPY (many): one sequence, one partition.
    ids = [one.pk] + [d.pk for d in few] + [d.pk for d in many]
    assert ids == list(range(one.pk, one.pk + 64))
    with connection.cursor() as cursor:
        [mine] = [p for p in partitions.list_partitions(cursor) if p.contains(one.pk) and not p.default]
    assert mine.month is not None and {where(pk) for pk in ids} == {mine.name}
    assert where(error.pk, ERROR) == mine.name.replace(DISPATCH, ERROR)


@pytest.mark.django_db
def test_partition_command_on_the_suites_database(capsys):
    call_command("dispatcher_partitions")
    out = capsys.readouterr().out
    if connection.vendor == "postgresql":
        assert out.strip() == "created 0: -; dropped 0: -"  # this month and the next two exist
    else:  # SQLite: plain tables, and cleanup_sent is the retention
        assert "not partitioned (sqlite)" in out
        assert maintain_partitions() == partitions.Report()
        assert partitions.dropped_whole(timezone.now()) is None


# -- a scratch database: the migration from today's schema ---------------------------------------
@dataclass
class Scratch:
    conn: Any
    name: str
    now: dt.datetime
    months: list[dt.date]
    dispatches: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    #: month -> ids created in it (in order), the out-of-order row apart
    by_month: dict[dt.date, list[int]] = field(default_factory=dict)
    late: int = 0


def _admin_connection() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(host=s["HOST"] or None, port=s["PORT"] or None, user=s["USER"] or None,
                           password=s["PASSWORD"] or None, dbname="postgres", autocommit=True)


@contextmanager
def as_default(conn: Any) -> Iterator[None]:
    """Every query of the code under test (the ORM, bulk.py's COPY, the sweeps) goes to ``conn``."""
    saved = connections["default"]
    connections["default"] = conn
    try:
        yield
    finally:
        connections["default"] = saved


def migrate(conn: Any, target: tuple[str, str]) -> None:
    """Every other app to its latest migration, the dispatcher to ``target``."""
    executor = MigrationExecutor(conn)
    others = [leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] != "dispatcher"]
    executor.migrate([*others, target])


def _fill(scratch: Scratch) -> None:
    """Months of history through the ORM: every state, results, claim tokens,
    users, error rows; ids in the order of time, as the sequence gives them."""
    users = [get_user_model().objects.create(username=f"u{i}") for i in range(3)]
    for month in scratch.months:
        day = dt.datetime(month.year, month.month, 3, 12, tzinfo=dt.UTC)
        if day > scratch.now:  # the current month, early in it: halfway to now
            start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
            day = start + (scratch.now - start) / 2
        message = Message.objects.create(message_type="plain", context={"text": f"{month}"}, created=day)
        rows = Dispatch.objects.bulk_create([
            Dispatch(message=message, messenger="smtp" if i % 2 else "sms",
                     recipient=users[i % 3] if i % 4 else None,
                     address=f"{month}-{i}@example.org", status=STATES[i % len(STATES)], attempts=i % 3,
                     created=day + dt.timedelta(seconds=i), next_attempt_at=day,
                     claim_token=uuid.uuid4() if STATES[i % len(STATES)] == "processing" else None,
                     lease_expires_at=day if STATES[i % len(STATES)] == "processing" else None,
                     dispatched_at=day + dt.timedelta(hours=1) if STATES[i % len(STATES)] == "sent" else None,
                     result={"id": f"provider-{month}-{i}"} if i % 3 == 0 else None)
            for i in range(24)
        ])
        scratch.by_month[month] = [d.pk for d in rows]
        DispatchError.objects.bulk_create([
            DispatchError(dispatch=d, attempt=n, error_class="TemporaryError", text=f"try {n} of {d.pk}",
                          permanent=d.status == "failed" and n == 2, created=day + dt.timedelta(hours=n))
            for d in rows if d.status in ("failed", "error") for n in (1, 2)
        ])
    # One row whose `created` is older than its id says (an import, a clock step):
    # it goes where its id falls, its month's bounds are not moved by it.
    late = Dispatch.objects.create(message=message, messenger="smtp", address="late@example.org",
                                   status="sent", created=day - dt.timedelta(days=200))
    scratch.late = late.pk


def snapshot() -> tuple[list[dict], list[dict]]:
    return list(Dispatch.objects.order_by("id").values()), list(DispatchError.objects.order_by("id").values())


@pytest.fixture(scope="module")
def scratch(django_db_setup, django_db_blocker) -> Iterator[Scratch]:
    """A database of its own: migrated to 0005, filled, migrated to 0006."""
    if connection.vendor != "postgresql":
        yield None  # type: ignore[misc]  # each test fails with the reason
        return
    name = f"dispatcher_partitions_{os.getpid()}"
    with django_db_blocker.unblock():
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        conn = type(connections["default"])({**connection.settings_dict, "NAME": name}, alias="scratch")
        connections["scratch"] = conn
        now = timezone.now()
        this = month_of(now)
        state = Scratch(conn, name, now, [add_months(this, i) for i in range(-4, 1)])
        try:
            with as_default(conn):
                migrate(conn, BEFORE)
                _fill(state)
                state.dispatches, state.errors = snapshot()
                migrate(conn, AFTER)
                migrate(conn, LATEST)
            yield state
        finally:
            conn.close()
            del connections["scratch"]
            with _admin_connection() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def on_scratch(scratch, django_db_blocker) -> Iterator[Scratch]:
    _require_postgresql()
    with django_db_blocker.unblock(), as_default(scratch.conn):
        yield scratch


@partitioning
def test_migration_keeps_every_row_id_state_and_error(on_scratch):
    s = on_scratch
    assert partitions.is_partitioned()
    assert len(s.dispatches) == 5 * 24 + 1 and len(s.errors) == 5 * 6 * 2
    assert snapshot() == (s.dispatches, s.errors)
    assert Counter(d["status"] for d in s.dispatches) == Counter(
        {"sent": 5 * 9 + 1, "failed": 15, "cancelled": 15, "error": 15, "pending": 15, "processing": 15})
    # Django's relations work across the new tables.
    failed = Dispatch.objects.filter(status="failed").order_by("id").first()
    assert [e.attempt for e in failed.errors.order_by("attempt")] == [1, 2]


@partitioning
def test_migration_makes_a_partition_per_month_of_history(on_scratch):
    s = on_scratch
    with connection.cursor() as cursor:
        layout = partitions.list_partitions(cursor)
    months = [p.month for p in layout if not p.default]
    assert months == s.months + [add_months(s.months[-1], 1), add_months(s.months[-1], 2)]
    assert layout[0].lo is None and layout[-1].default
    for month, ids in s.by_month.items():
        assert {where(pk) for pk in ids} == {partition_name(DISPATCH, month)}, month
        for error in DispatchError.objects.filter(dispatch_id__in=ids):
            assert where(error.pk, ERROR) == partition_name(ERROR, month)
    assert where(s.late) == partition_name(DISPATCH, s.months[-1])  # by its id, not its date
    # The months to come are empty and have room: STEP ids each.
    assert layout[-2].hi - layout[-2].lo == partitions.STEP


@partitioning
def test_after_the_migration_ids_continue_and_inserts_land_in_this_month(on_scratch):
    s = on_scratch
    top = max(d["id"] for d in s.dispatches)
    message = Message.objects.create(message_type="plain")
    now = timezone.now()
    one = Dispatch.objects.create(message=message, messenger="smtp", address="after@example.org")
    few = Dispatch.objects.bulk_create([Dispatch(message=message, messenger="smtp", address=f"b{i}@x.org")
                                        for i in range(3)])
    many = create_dispatches(message, [("smtp", f"c{i}@x.org", None) for i in range(80)], now, None, now)
    ids = [one.pk] + [d.pk for d in few] + [d.pk for d in many]
    assert ids == list(range(top + 1, top + 85))  # the sequence went on from the copied rows
    assert {where(pk) for pk in ids} == {current_partition()}
    error = DispatchError.objects.create(dispatch=one, attempt=1, error_class="X", text="after")
    assert where(error.pk, ERROR) == current_partition().replace(DISPATCH, ERROR)
    assert error.pk == max(e["id"] for e in s.errors) + 1


@partitioning
def test_the_sweep_creates_months_ahead_and_starts_each_months_ids(on_scratch):
    s = on_scratch
    this = month_of(s.now)
    later = dt.datetime(*add_months(this, 1).timetuple()[:3], 2, tzinfo=dt.UTC)
    report = partitions.maintain(now=later, days=10_000)
    assert report.created == [partition_name(DISPATCH, add_months(this, 3))]
    with connection.cursor() as cursor:
        layout = {p.month: p for p in partitions.list_partitions(cursor)}
    first = layout[add_months(this, 1)].lo
    assert report.jumped_to == first
    message = Message.objects.create(message_type="plain")
    fresh = Dispatch.objects.create(message=message, messenger="smtp", address="next-month@example.org")
    assert fresh.pk == first and where(fresh.pk) == partition_name(DISPATCH, add_months(this, 1))
    # Run again: nothing more to do, and the sequence never moves back.
    again = partitions.maintain(now=later, days=10_000)
    assert (again.created, again.jumped_to, again.dropped) == ([], None, [])
    assert Dispatch.objects.create(message=message, messenger="smtp", address="x@example.org").pk == first + 1


@partitioning
def test_rows_the_default_partition_took_move_into_a_new_month(on_scratch):
    """No insert ever fails: an id beyond every month goes to the default
    partition, and into its month's partition once the sweep creates it."""
    with connection.cursor() as cursor:
        top = max(p.hi for p in partitions.list_partitions(cursor) if p.hi is not None)
    message = Message.objects.create(message_type="plain")
    stray = Dispatch.objects.create(id=top + 7, message=message, messenger="smtp", address="stray@x.org")
    DispatchError.objects.create(dispatch=stray, attempt=1, error_class="X", text="stray")
    assert where(stray.pk) == f"{DISPATCH}_default"
    far = dt.datetime(*add_months(month_of(on_scratch.now), 4).timetuple()[:3], 2, tzinfo=dt.UTC)
    report = partitions.maintain(now=far, days=10_000)
    assert report.created[0] == partition_name(DISPATCH, add_months(month_of(on_scratch.now), 4))
    assert where(stray.pk) == report.created[0]
    assert where(stray.pk, ERROR, "dispatch_id") == report.created[0].replace(DISPATCH, ERROR)
    assert Dispatch.objects.filter(pk=stray.pk).exists()


@partitioning
def test_retention_drops_old_months_whole_and_keeps_one_with_unfinished_rows(on_scratch, capsys):
    s = on_scratch
    # Cutoff inside the month three months back: the two months before it are past retention.
    start = dt.datetime(*s.months[2].timetuple()[:3], tzinfo=dt.UTC)
    days = (timezone.now() - start).days
    oldest, older, kept = s.months[0], s.months[1], s.months[2]
    unfinished = list(Dispatch.objects.filter(pk__in=s.by_month[oldest], status__in=partitions.UNFINISHED)
                      .values_list("pk", flat=True))
    assert len(unfinished) == 9  # pending, error, processing rows of that month
    assert_counters_exact()  # filled by migration 0009 from the months of history
    Dispatch.objects.filter(pk__in=s.by_month[older], status__in=partitions.UNFINISHED).update(status="sent")

    # A month whose newest row is recent (the sweep was late to start the next month) waits.
    newest = s.by_month[older][-1]
    Dispatch.objects.filter(pk=newest).update(created=timezone.now())
    report = partitions.maintain(days=days)
    assert report.dropped == [] and list(report.held) == [partition_name(DISPATCH, oldest)]
    Dispatch.objects.filter(pk=newest).update(created=start - dt.timedelta(days=20))

    sent_before = set(Dispatch.objects.filter(status="sent", pk__in=s.by_month[oldest])
                      .values_list("pk", flat=True))
    # Rows pointing at a dropped month's dispatches follow their on_delete rule.
    bounced = s.by_month[older][0]
    DeliveryReceipt.objects.create(dispatch_id=bounced, event="bounced", provider="postmark",
                                   occurred_at=start, permanent=True)
    suppressed = Suppression.objects.create(kind="email", address="gone@example.org", reason="bounce",
                                            dispatch_id=bounced)
    kept_receipt = DeliveryReceipt.objects.create(dispatch_id=s.by_month[kept][0], event="delivered",
                                                  provider="postmark", occurred_at=start)
    call_command("dispatcher_partitions", "--days", str(days))
    out, err = capsys.readouterr()
    assert not DeliveryReceipt.objects.filter(dispatch_id=bounced).exists()
    suppressed.refresh_from_db()
    assert suppressed.dispatch_id is None  # the address stays suppressed
    assert DeliveryReceipt.objects.filter(pk=kept_receipt.pk).exists()
    assert f"dropped 1: {partition_name(DISPATCH, older)}" in out
    held = partition_name(DISPATCH, oldest)
    assert f"kept {held}: past retention, but 9 dispatches in it are unfinished" in err
    with connection.cursor() as cursor:
        names = {p.name for p in partitions.list_partitions(cursor)}
        error_names = {p.name for p in partitions.list_partitions(cursor, ERROR)}
    assert partition_name(DISPATCH, older) not in names and partition_name(ERROR, older) not in error_names
    assert not Dispatch.objects.filter(pk__in=s.by_month[older]).exists()
    assert not DispatchError.objects.filter(dispatch_id__in=s.by_month[older]).exists()
    assert Dispatch.objects.filter(pk__in=s.by_month[kept]).count() == 24
    assert Dispatch.objects.filter(pk__in=s.by_month[oldest]).count() == 24
    assert_counters_exact()  # the DROP took its month out of the counters

    # cleanup_sent deletes old sent rows where no DROP will take them (the month kept,
    # the default partition), in chunks, and leaves the months to be dropped whole alone.
    message = Message.objects.create(message_type="plain")
    with connection.cursor() as cursor:
        top = max(p.hi for p in partitions.list_partitions(cursor) if p.hi is not None)
    stray = Dispatch.objects.create(id=top + 1, message=message, messenger="smtp", address="s@example.org",
                                    status="sent", dispatched_at=start - dt.timedelta(days=40))
    assert where(stray.pk) == f"{DISPATCH}_default"
    young_sent = Dispatch.objects.filter(pk__in=s.by_month[kept], status="sent").update(
        dispatched_at=start - dt.timedelta(days=1))
    assert young_sent == 9
    assert cleanup_sent(days=days, chunk=2) == len(sent_before) + 1
    assert not Dispatch.objects.filter(pk__in=sent_before | {stray.pk}).exists()
    assert set(Dispatch.objects.filter(pk__in=s.by_month[oldest]).values_list("status", flat=True)) == {
        "failed", "cancelled", "error", "pending", "processing"}
    assert Dispatch.objects.filter(pk__in=s.by_month[kept], status="sent").count() == 9

    # Once its rows are finished, the month goes too.
    Dispatch.objects.filter(pk__in=unfinished).update(status="failed", claim_token=None,
                                                      lease_expires_at=None)
    assert partitions.maintain(days=days).dropped == [partition_name(DISPATCH, oldest)]
    assert not Dispatch.objects.filter(pk__in=s.by_month[oldest]).exists()
    assert_counters_exact()  # through the cleanup's DELETEs and the second DROP


@partitioning
def test_a_drop_that_cannot_get_its_lock_fails_the_command(on_scratch, monkeypatch):
    s = on_scratch
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    kept = s.months[2]
    days = (timezone.now() - dt.datetime(*add_months(kept, 1).timetuple()[:3], tzinfo=dt.UTC)).days
    Dispatch.objects.filter(pk__in=s.by_month[kept], status__in=partitions.UNFINISHED).update(status="failed")
    other = type(connections["default"])(dict(s.conn.settings_dict), alias="blocker")
    try:
        other.ensure_connection()
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {DISPATCH}")  # a reader holds the table, for long
        with pytest.raises(CommandError, match="could not drop .*lock timeout"):
            call_command("dispatcher_partitions", "--days", str(days))
        other.rollback()
    finally:
        other.close()
    assert partitions.maintain(days=days).dropped == [partition_name(DISPATCH, kept)]


@partitioning
def test_the_migration_reverses(on_scratch):
    """Back to plain tables (with the foreign key again) and forward again, every row kept."""
    s = on_scratch
    before = snapshot()
    migrate(s.conn, BEFORE)
    assert not partitions.is_partitioned()
    assert snapshot() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                       "AND conrelid = to_regclass(%s) AND confrelid = to_regclass(%s)", [ERROR, DISPATCH])
        assert cursor.fetchone()[0] == 1
    migrate(s.conn, AFTER)
    assert partitions.is_partitioned() and snapshot() == before
    migrate(s.conn, LATEST)
    assert_counters_exact()
