"""Counts kept as dispatches change (dispatcher.counters): always equal to a real count.

Every test changes dispatches through the engine's own paths (scheduling,
streamed fan-outs, claims and outcome flushes, the sweeps, cancel and retry
from the admin and the dashboard, the cleanup) and then compares the counters
with a GROUP BY over the tables. One test runs real worker processes, four at
once, with random outcomes while the counters are compacted and reconciled
underneath them. The partition DROP is covered in test_partitions.py.
"""

from __future__ import annotations

import io
import json
import random
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dispatcher import counters, partitions
from dispatcher.api import cancel, recipient_stream, recipients, retry_now, schedule_messages
from dispatcher.dashboard import stats
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch, DispatchCounter, DispatchError
from dispatcher.sweeps import (
    cleanup_sent,
    compact_counters,
    reclaim_expired_leases,
    reconcile_counters,
    requeue_due,
)
from tests.counting import assert_counters_exact, real_totals
from tests.services import wait_for

METRICS = "/dispatcher/ops/metrics"


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("admin", "admin@example.org", "pw"))
    return client


def _ids(status: str, messenger: str = "flaky") -> list[int]:
    return list(Dispatch.objects.filter(status=status, messenger=messenger).values_list("pk", flat=True))


@pytest.mark.django_db
def test_counters_follow_every_state_change_of_the_engine():
    assert_counters_exact()
    scripted = [f"{w}/{i}" for i, w in enumerate(["ok", "temp", "perm"] * 10)]
    [(_, dispatches)] = schedule_messages("hello", recipients("flaky", scripted))
    assert counters.totals() == {"flaky": {"pending": 30}}
    fanout = schedule_messages("to many", recipient_stream("smtp", (f"u{i}@example.org" for i in range(2500)),
                                                           chunk_size=1000))
    assert fanout.count == 2500
    assert_counters_exact()

    deliver_batch("flaky", [d.pk for d in dispatches])  # claim, then one flush of three outcomes
    assert counters.totals()["flaky"] == {"sent": 10, "error": 10, "failed": 10}
    assert counters.totals("error") == {"flaky": {"temporary": 10, "permanent": 10}}
    assert_counters_exact()

    # A worker died holding a batch: the lease sweep takes it back (ERROR, and an error row each).
    held = _ids("error")[:4]
    Dispatch.objects.filter(pk__in=held).update(status="processing", lease_expires_at=timezone.now()
                                                - timedelta(minutes=1))
    assert_counters_exact()
    assert reclaim_expired_leases() == 4
    assert_counters_exact()

    # Retries: due again, requeued, delivered again (temp fails again, with a new error row).
    Dispatch.objects.filter(status="error").update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert requeue_due() >= 10
    deliver_batch("flaky", _ids("error"))
    assert_counters_exact()

    assert retry_now(Dispatch.objects.filter(status="failed")) == 10
    assert cancel(Dispatch.objects.filter(pk__in=_ids("pending", "smtp")[:100])) == 100
    assert_counters_exact()

    # The cleanup deletes old sent rows (their error rows go with them) and the counts follow.
    # On a partitioned database it leaves this month to the DROP (test_partitions.py covers
    # both there), so the same rows go with the ORM's own delete.
    Dispatch.objects.filter(status="sent").update(dispatched_at=timezone.now() - timedelta(days=400))
    if partitions.is_partitioned():
        assert cleanup_sent(days=30) == 0
        Dispatch.objects.filter(pk__in=_ids("sent")).delete()
    else:
        assert cleanup_sent(days=30) == 10
    assert_counters_exact()
    assert counters.totals()["flaky"].get("sent") is None

    # A site's own bulk update and delete, and a rolled back change.
    Dispatch.objects.filter(pk__in=_ids("pending", "smtp")[:5]).delete()
    Dispatch.objects.filter(messenger="smtp", status="pending").update(status="sent")
    assert_counters_exact()


@pytest.mark.django_db
def test_admin_and_dashboard_actions_keep_the_counters_exact(staff):
    [(_, dispatches)] = schedule_messages("hello", recipients("flaky", ["ok/1", "temp/2", "perm/3", "ok/4"]))
    deliver_batch("flaky", [d.pk for d in dispatches[:3]])
    by_address = {d.address: d.pk for d in dispatches}
    changelist = reverse("admin:dispatcher_dispatch_changelist")
    staff.post(changelist, {"action": "retry_now_action", "_selected_action": [by_address["perm/3"]]})
    assert_counters_exact()
    staff.post(changelist, {"action": "cancel_action", "_selected_action": [by_address["temp/2"],
                                                                            by_address["ok/4"]]})
    assert counters.totals()["flaky"] == {"sent": 1, "pending": 1, "cancelled": 2}
    assert_counters_exact()
    deliver_batch("flaky", [by_address["perm/3"]])
    staff.post(reverse("dispatcher:dashboard-retry"), {"dispatch": [by_address["perm/3"]]})
    assert counters.totals()["flaky"] == {"sent": 1, "pending": 1, "cancelled": 2}
    assert_counters_exact()


@pytest.mark.django_db
def test_reconciliation_fixes_a_broken_counter_and_every_reader_shows_the_counters(staff):
    [(_, dispatches)] = schedule_messages("hello", recipients("flaky", ["ok/1", "temp/2", "perm/3"]))
    deliver_batch("flaky", [d.pk for d in dispatches])
    day = timezone.now().date()
    # Break them on purpose: 1,000,000 sent that do not exist, and a key's rows gone.
    DispatchCounter.objects.create(kind="dispatch", messenger="flaky", status="sent", day=day, n=999_999)
    DispatchCounter.objects.filter(kind="error", status="temporary").delete()

    # The readers show what the counters say (no scan behind them): the broken figure.
    page = staff.get(reverse("dispatcher:dashboard")).content.decode()
    assert "1000000" in page.replace(",", "").replace("\u202f", "").replace("&nbsp;", "")
    metrics = staff.get(METRICS).content.decode()
    assert 'dispatcher_dispatches{messenger="flaky",status="sent"} 1e+06' in metrics
    assert 'dispatcher_dispatch_errors{messenger="flaky",permanent="false"} 0.0' in metrics
    out = io.StringIO()
    call_command("dispatcher_status", "--format", "json", "--no-broker", stdout=out)
    assert json.loads(out.getvalue())["messengers"]["flaky"]["counts"]["sent"] == 1_000_000

    report = counters.reconcile()
    assert report.corrections == {("dispatch", "flaky", "sent", str(day)): -999_999,
                                  ("error", "flaky", "temporary", str(day)): 1}
    assert_counters_exact()
    assert reconcile_counters() == 0  # nothing left to correct
    metrics = staff.get(METRICS).content.decode()
    assert 'dispatcher_dispatches{messenger="flaky",status="sent"} 1.0' in metrics
    assert 'dispatcher_dispatch_errors{messenger="flaky",permanent="false"} 1.0' in metrics
    out = io.StringIO()
    call_command("dispatcher_status", "--format", "json", "--no-broker", stdout=out)
    assert json.loads(out.getvalue())["messengers"]["flaky"]["counts"] == {
        "pending": 0, "processing": 0, "sent": 1, "error": 1, "failed": 1, "cancelled": 0, "skipped": 0}


@pytest.mark.partitioning  # PostgreSQL only: SQLite has no TRUNCATE
@pytest.mark.django_db
def test_truncate_empties_the_counts_of_its_table():
    [(_, dispatches)] = schedule_messages("hello", recipients("flaky", ["temp/1", "ok/2"]))
    deliver_batch("flaky", [d.pk for d in dispatches])
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction holds deferred FK checks
        cursor.execute("TRUNCATE dispatcher_dispatch")
    assert counters.totals() == {} and counters.totals("error") == {"flaky": {"temporary": 1}}
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE dispatcher_dispatcherror")
    assert counters.totals("error") == {}
    assert_counters_exact()


@pytest.mark.django_db
def test_migrate_puts_back_missing_triggers_and_reconciles():
    """Tables made without migrations (pytest-django's --nomigrations) or
    triggers dropped by hand: the next ``migrate`` installs them again."""
    schedule_messages("hello", recipients("flaky", ["ok/1", "ok/2"]))
    assert counters.installed(connection) is True
    counters.uninstall(connection)
    assert counters.installed(connection) is False
    schedule_messages("unseen", recipients("flaky", ["ok/3"]))  # not counted: no trigger
    assert counters.totals() == {"flaky": {"pending": 2}}
    call_command("migrate", verbosity=0)
    assert counters.installed(connection) is True
    assert counters.totals() == {"flaky": {"pending": 3}}
    schedule_messages("seen", recipients("flaky", ["ok/4"]))
    assert_counters_exact()


@pytest.mark.django_db
def test_counts_left_by_a_flush_that_emptied_the_counters_first_are_cleared():
    """``flush`` on SQLite deletes table after table, in no set order: when the
    counters go before the dispatches, the dispatches' DELETE triggers leave
    negative counts behind. The post_migrate signal that ``flush`` sends
    clears them once both tables are empty."""
    [(_, dispatches)] = schedule_messages("hello", recipients("flaky", ["temp/1", "ok/2"]))
    deliver_batch("flaky", [d.pk for d in dispatches])
    DispatchCounter.objects.all().delete()
    DispatchError.objects.all().delete()
    Dispatch.objects.all().delete()
    assert counters.totals() == {"flaky": {"error": -1, "sent": -1}}
    emit_post_migrate_signal(verbosity=0, interactive=False, db=connection.alias)
    assert counters.counted() == {}
    assert_counters_exact()


@pytest.mark.django_db
def test_compaction_folds_the_deltas_and_keeps_every_count():
    for i in range(6):
        [(_, dispatches)] = schedule_messages(f"m{i}", recipients("flaky", [f"ok/{i}", f"temp/{i}"]))
        deliver_batch("flaky", [d.pk for d in dispatches])
    DispatchCounter.objects.create(kind="dispatch", messenger="gone", status="sent",
                                   day=timezone.now().date(), n=0)
    before = counters.counted()
    compact_counters()
    assert counters.counted() == before
    rows = list(DispatchCounter.objects.values_list("kind", "messenger", "status", "day"))
    assert len(rows) == len(set(rows)) == len(before)  # one row a key, none at zero
    assert_counters_exact()


def _changelist_counts(staff, params: dict[str, str]) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(reverse("admin:dispatcher_dispatch_changelist"), params)
    assert response.status_code == 200
    return [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()
            and "dispatcher_dispatch" in q["sql"]]


@pytest.mark.django_db
def test_the_admin_list_counts_from_the_counters_or_caps_its_count(staff):
    [(_, dispatches)] = schedule_messages("hello", recipients("flaky", ["ok/1", "temp/2", "perm/3"]))
    deliver_batch("flaky", [d.pk for d in dispatches])
    schedule_messages("hello", recipients("smtp", ["a@example.org"]))
    for params in ({}, {"status__exact": "failed"}, {"messenger__exact": "flaky"},
                   {"status__exact": "sent", "messenger": "flaky"}):
        assert _changelist_counts(staff, params) == []  # the counters answered: no COUNT over the table
    response = staff.get(reverse("admin:dispatcher_dispatch_changelist"), {"status__exact": "failed"})
    assert response.context["cl"].result_count == 1 and "perm/3" in response.content.decode()
    response = staff.get(reverse("admin:dispatcher_dispatch_changelist"), {"messenger__exact": "flaky"})
    assert response.context["cl"].result_count == 3
    # A combination the counters say is empty is not looked for (it would read a whole index).
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(reverse("admin:dispatcher_dispatch_changelist"),
                             {"status__exact": "sent", "messenger": "smtp"})
    assert response.context["cl"].result_count == 0
    assert not [q for q in queries.captured_queries if 'FROM "dispatcher_dispatch"' in q["sql"]]
    # Another filter: a count, capped (a LIMIT inside it), never a full COUNT(*).
    [capped] = _changelist_counts(staff, {"q": "perm/3"})
    assert "LIMIT 10001" in capped
    response = staff.get(reverse("admin:dispatcher_dispatch_changelist"), {"q": "perm/3"})
    assert response.context["cl"].result_count == 1
    # The messenger filter's choices come without a DISTINCT over the dispatches.
    with CaptureQueriesContext(connection) as queries:
        page = staff.get(reverse("admin:dispatcher_dispatch_changelist")).content.decode()
    assert not [q for q in queries.captured_queries
                if "DISTINCT" in q["sql"] and 'DISTINCT "dispatcher_dispatch"."messenger"' in q["sql"]]
    assert "?messenger=smtp" in page and "?messenger=flaky" in page


def _reads(staff) -> dict[str, list[str]]:
    found = {}
    for name, url in (("dashboard", reverse("dispatcher:dashboard")), ("metrics", METRICS)):
        with CaptureQueriesContext(connection) as queries:
            assert staff.get(url).status_code == 200
        found[name] = [q["sql"] for q in queries.captured_queries]
    return found


@pytest.mark.django_db
def test_dashboard_and_metrics_queries_do_not_grow_with_the_table(staff):
    schedule_messages("few", recipients("flaky", ["ok/1", "temp/2"]))
    small = _reads(staff)
    for i in range(5):
        [(_, dispatches)] = schedule_messages(
            f"more {i}", recipients("flaky", [f"{random.choice(['ok', 'temp', 'perm'])}/{i}-{j}"
                                              for j in range(200)]))
        deliver_batch("flaky", [d.pk for d in dispatches])
    schedule_messages("more", recipient_stream("smtp", (f"u{i}@example.org" for i in range(3000))))
    large = _reads(staff)
    for name in ("dashboard", "metrics"):
        assert len(large[name]) == len(small[name]), name
        # No query reads the error table, and every query of the dispatch table is
        # bounded by a WHERE (an index of live rows, of the last hour, or of failures).
        for sql in large[name]:
            assert '"dispatcher_dispatcherror"' not in sql.split("WHERE")[0] or "LIMIT" in sql, sql
            if 'FROM "dispatcher_dispatch"' in sql:
                assert "WHERE" in sql, sql


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_counters_stay_exact_under_four_worker_processes_with_random_outcomes(workers):
    """Two workers of two processes each deliver 600 dispatches with random
    outcomes and retries, while this process compacts and reconciles the
    counters underneath them; at the end the counters equal a real count, and
    reconciliation finds nothing to correct."""
    rng = random.Random(19)
    addresses = [f"{rng.choice(['ok', 'ok', 'temp', 'perm'])}/{i}" for i in range(600)]
    env = {"DISPATCHER_RETRY_BASE": "0.2", "DISPATCHER_RETRY_MAX": "0.5", "DISPATCHER_RETRY_LIMIT": "3"}
    workers("a", concurrency=2, **env)
    workers("b", concurrency=2, **env)
    for start in range(0, 600, 100):
        schedule_messages(f"batch {start}", recipients("flaky", addresses[start:start + 100]))
    corrections = []

    def settled() -> bool:
        requeue_due()
        counters.compact()
        corrections.append(len(counters.reconcile().corrections))
        dispatches, _ = real_totals()
        return set(dispatches.get("flaky", {})) <= {"sent", "failed"}

    wait_for(settled, 180, 0.5, "every dispatch sent or failed")
    assert_counters_exact()
    assert set(corrections) == {0}  # never off, even in the middle of the traffic
    by_status = counters.totals()["flaky"]
    assert by_status["sent"] == sum(1 for a in addresses if a.startswith("ok"))
    assert by_status["failed"] == 600 - by_status["sent"]
    # One error row per failed attempt: perm fails once, temp three times (the retry limit).
    errors = counters.totals("error")["flaky"]
    assert sum(errors.values()) == sum({"ok": 0, "temp": 3, "perm": 1}[a.split("/")[0]] for a in addresses)


@pytest.mark.django_db
def test_due_now_derived_from_the_counters_equals_a_count_of_the_due_rows():
    """The dashboard, the scrape and dispatcher_status take "due now" as the
    claimable rows the counters hold less those due later (the waiting
    index), and the oldest due from that index: the same answer as counting
    the due rows, whatever the mix of due, scheduled, retrying and done rows."""
    now = timezone.now()
    rng = random.Random(19)
    for alias in ("smtp", "flaky", "mymessenger"):
        for _ in range(3):
            send_at = now + timedelta(minutes=rng.choice([-90, -5, 30, 600]))
            schedule_messages(f"to {alias}", recipients(alias, [f"{alias}{i}@example.org" for i in range(7)]),
                              send_at=send_at)
    rows = list(Dispatch.objects.order_by("pk"))
    for dispatch in rng.sample(rows, 25):  # retries waiting or due, and finished rows
        dispatch.status = rng.choice(["error", "sent", "failed", "processing"])
        dispatch.next_attempt_at = now + timedelta(minutes=rng.choice([-3, 3]))
        dispatch.save(update_fields=["status", "next_attempt_at"])
    later = now + timedelta(seconds=1)

    derived = stats.backlog(later)
    counted = stats._counted_backlog(later)
    assert derived == counted
    assert sum(derived[0].values()) == Dispatch.objects.filter(
        status__in=["pending", "error"], next_attempt_at__lte=later).count() > 0
    assert derived[1] is not None and derived[1] >= timedelta(minutes=89)
    # Nothing due: no messenger shows a negative or empty entry.
    Dispatch.objects.filter(next_attempt_at__lte=later).update(status="sent")
    assert stats.backlog(later) == ({}, None)
