"""``python -m bench --scale``: how cost grows with the history, from 10,000 to 10,000,000 dispatches.

Issue #19 asks that reading counts cost nothing like a scan of the history:
with 10,000,000 dispatch rows the dashboard in 50 ms at most, a Prometheus
scrape in 20 ms, ``dispatcher_status`` in 100 ms, the admin's dispatch list
filtered by status or messenger in 200 ms; and that a fan-out to 1,000,000
recipients stay within 250 MB at 40,000 dispatches a second or more. Its
point 6 asks for one table of how every cost grows with the history: time and
peak memory of scheduling, draining, the dashboard, the metrics, the sweeps
and the admin at 10k, 100k, 1M and 10M rows. The same table, grown from one
size to the next (``--sizes``), is measured at each size:

1. **The table** is filled on PostgreSQL by ``INSERT ... SELECT`` over
   ``generate_series`` (a million rows a statement, with the indexes in
   place, as a site's table has them): six months of history, 95 % sent, 3 %
   failed, 2 % cancelled, over three messengers (70 % smtp, 25 % hook, 5 %
   null), a failed attempt (DispatchError) for every failed row and for 5 % of
   the sent ones, one Message per 1,000 dispatches; and a live backlog of
   20,000 pending, 1,000 erroring and 500 processing rows. The counter
   triggers are off while it loads (``session_replication_role = replica``,
   as a bulk restore would have them), then one :func:`dispatcher.counters.reconcile`
   counts it all: the figure is what the daily reconciliation costs.
2. **The readers**, each measured in this process after a warm-up, median
   of 20 runs (the admin 10 per filter): the dashboard page and the metrics
   endpoint through Django's test client as a staff user,
   ``dispatcher_status`` through ``call_command`` (Django's own start-up, about
   a second, is the same for every command and not counted), and the admin's
   dispatch list unfiltered and filtered. The dashboard and the status
   command ask the workers which queues they consume (a broadcast that waits
   up to a second, kept 10 s): here that answer is kept for the whole run, as
   it is for every read but one in 10 s.
3. **Scheduling** (``--work``, 100,000 by default, the same at every size so
   that only the history changes): ``schedule_messages(message,
   recipient_stream("null", addresses))`` in a process of its own, publishing
   included; its wall time, dispatches a second and peak RSS (VmHWM). The
   broker is purged after, and the rows are deleted by a plain ``DELETE``
   (the counter triggers see it), so the next steps find the history alone.
4. **Draining** (``--work`` rows): that many PENDING rows to the ``null``
   messenger, inserted by COPY and published by the requeue sweep (timed
   apart: the requeue sweep's cost when it has work), then drained by one
   worker command with two processes, as ``make bench ONLY=drain`` does. The
   rate is taken from the rows' own ``dispatched_at``, first to last; the
   memory is the largest VmHWM of the worker and its pool children, read
   while it drains and before it stops. The rows, sent by then, are deleted
   after (plain ``DELETE`` again): each size's figures are on its own history.
5. **The sweeps** beat runs over that table, once each, in a process of
   their own (its VmHWM is the peak RSS of the group): requeue due, reclaim
   expired leases, cleanup of sent rows, partition maintenance (creation
   ahead and retention by DROP), compacting and reconciling the counters,
   the report of undelivered dispatches. Before they run the live backlog is
   made current (each pending or erroring row ``queued_at`` now, as if a task
   held it; each processing row's lease an hour ahead), and the retention is
   181 days, just longer than the history: each run finds what a healthy
   site's hourly or per-interval run finds, next to nothing, so the figure is
   the cost of looking, the part that could grow with the table, and the
   history stays as it is for the next size. What retiring a month costs is
   not measured here (the generated history is six months of ``created``
   but, by id, mostly one month's partition). The reconciliation's count of
   corrected keys is a check: it should be 0 after the deletes above.
6. **The fan-outs** (``--fanouts``): ``schedule_messages(message,
   recipient_stream("null", addresses))`` in a process of its own (its peak
   RSS, VmHWM, is the figure), a million addresses from a generator, onto the
   largest table, publishing included (tasks to the Redis database of the
   bench, purged after; the rows are deleted after, by plain ``DELETE``).

Then a "how cost grows" table (markdown: an operation a row, a size a column)
is printed after the JSON. Run it on a quiet machine: it needs about 6 GB of
disk and, for 1M then 10M rows and a fan-out of 1M, about ten minutes
before the per-size steps (3 to 5) were added; these add a fan-out and a
drain of 100,000 and the sweeps at each size (not timed at 10M yet).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
# Prometheus scrapes with a bearer token, not a staff session (no session or user query).
os.environ.setdefault("DISPATCHER_METRICS_TOKEN", "bench-scale-metrics-token-0123456789")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402

from dispatcher import counters, sweeps  # noqa: E402
from dispatcher.dashboard import workers  # noqa: E402
from dispatcher.partitions import PartitionMaintenanceError  # noqa: E402

TARGETS = {"dashboard": 50.0, "metrics": 20.0, "status": 100.0, "admin": 200.0}
FANOUT_TARGET = {"rss_mb": 250.0, "per_second": 40_000.0}
CHUNK = 1_000_000
MESSAGE_EVERY = 1_000
BACKLOG = {"pending": 20_000, "error": 1_000, "processing": 500}
#: Scheduling and draining at every size: the same work, onto more history.
WORK = 100_000
#: The sweeps' retention (days): just longer than the six months of history, so nothing is past it.
RETENTION_DAYS = 181
#: History rows (the backlog and fan-outs are pending or processing).
HISTORY = "SELECT count(*) FROM dispatcher_dispatch WHERE status IN ('sent', 'failed', 'cancelled')"


def _sql(statement: str, params: list[Any] | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def empty() -> None:
    _sql("TRUNCATE dispatcher_dispatcherror, dispatcher_dispatch, dispatcher_message, "
         "dispatcher_dispatchcounter RESTART IDENTITY CASCADE")


def grow(total: int) -> dict[str, float]:
    """Add history rows until the table holds ``total`` of them (plus the backlog, added once)."""
    have = _sql(HISTORY)[0][0]
    started = time.perf_counter()
    _sql("SET session_replication_role = replica")  # no triggers (counters, foreign keys) while loading
    try:
        for lo in range(have, total, CHUNK):
            hi = min(total, lo + CHUNK)
            first = _sql("SELECT coalesce(max(id), 0) FROM dispatcher_dispatch")[0][0]
            # Messages first: one per MESSAGE_EVERY dispatches, ids in step with the dispatches'.
            _sql("INSERT INTO dispatcher_message (id, message_type, context, priority, created) "
                 "SELECT m, 'plain', '{\"text\": \"bench\"}'::jsonb, 0, now() - interval '180 days' "
                 "  + (m * %s) * interval '180 days' / %s "
                 "FROM generate_series(%s, %s) AS m ON CONFLICT (id) DO NOTHING",
                 [MESSAGE_EVERY, total, lo // MESSAGE_EVERY + 1, (hi - 1) // MESSAGE_EVERY + 1])
            # A row's month and status from its number: 95 % sent, 3 % failed, 2 % cancelled.
            _sql("INSERT INTO dispatcher_dispatch (messenger, address, status, attempts, next_attempt_at, "
                 "  dispatched_at, created, message_id, result) "
                 "SELECT CASE WHEN mod(i, 20) < 14 THEN 'smtp' WHEN mod(i, 20) < 19 THEN 'hook' "
                 "  ELSE 'null' END, "
                 "  'user' || i || '@example.org', "
                 "  CASE WHEN mod(i, 100) < 95 THEN 'sent' WHEN mod(i, 100) < 98 THEN 'failed' "
                 "  ELSE 'cancelled' END, "
                 "  1, t, CASE WHEN mod(i, 100) < 95 THEN t + interval '2 seconds' END, t, i / %s + 1, "
                 "  CASE WHEN mod(i, 100) < 95 THEN jsonb_build_object('message_id', 'pm-' || i) END "
                 "FROM generate_series(%s, %s) AS i, "
                 "  LATERAL (SELECT now() - interval '180 days' + i * interval '180 days' / %s AS t) AS at",
                 [MESSAGE_EVERY, lo, hi - 1, total])
            _sql("SELECT setval(pg_get_serial_sequence('dispatcher_message', 'id'), "
                 "(SELECT max(id) FROM dispatcher_message))")
            _sql("INSERT INTO dispatcher_dispatcherror "
                 "  (dispatch_id, attempt, error_class, text, permanent, created) "
                 "SELECT id, 1, CASE WHEN status = 'failed' THEN 'PermanentError' ELSE 'TemporaryError' END, "
                 "  'bench', status = 'failed', created + interval '1 second' "
                 "FROM dispatcher_dispatch WHERE id > %s "
                 "  AND (status = 'failed' OR (status = 'sent' AND mod(id, 20) = 0))", [first])
            print(f"  {hi:,} rows ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if not _sql("SELECT 1 FROM dispatcher_dispatch WHERE status = 'pending' LIMIT 1"):
            _backlog()
    finally:
        _sql("SET session_replication_role = DEFAULT")
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    _sql("VACUUM ANALYZE dispatcher_dispatch")
    _sql("VACUUM ANALYZE dispatcher_dispatcherror")
    _sql("VACUUM ANALYZE dispatcher_message")
    vacuumed = time.perf_counter() - started
    started = time.perf_counter()
    corrections = counters.reconcile().corrections
    reconciled = time.perf_counter() - started
    counters.compact()
    _sql("VACUUM ANALYZE dispatcher_dispatchcounter")
    return {"load_s": round(loaded, 1), "vacuum_analyze_s": round(vacuumed, 1),
            "reconcile_s": round(reconciled, 2), "reconcile_keys": len(corrections)}


def _backlog() -> None:
    """Live rows at the end of the id range: pending (due, with a live task), erroring, processing."""
    _sql("INSERT INTO dispatcher_message (message_type, context, priority, created) "
         "VALUES ('plain', '{}'::jsonb, 0, now())")
    message = _sql("SELECT max(id) FROM dispatcher_message")[0][0]
    for status, n in BACKLOG.items():
        _sql("INSERT INTO dispatcher_dispatch (messenger, address, status, attempts, next_attempt_at, "
             "  queued_at, lease_expires_at, created, message_id) "
             "SELECT CASE WHEN mod(i, 4) = 0 THEN 'hook' ELSE 'smtp' END, 'live' || i || '@example.org', %s, "
             "  CASE WHEN %s = 'pending' THEN 0 ELSE 1 END, now() - interval '1 minute', now(), "
             "  CASE WHEN %s = 'processing' THEN now() + interval '1 hour' END, now(), %s "
             "FROM generate_series(1, %s) AS i",
             [status, status, status, message, n])


def _median_ms(func: Callable[[], Any], runs: int) -> float:
    func()  # warm-up: connections, caches, the first plan
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def _queries(func: Callable[[], Any]) -> dict[str, float]:
    """How many queries one run makes, and their time: the part that could grow with the table."""
    with CaptureQueriesContext(connection) as captured:
        func()
    return {"queries": len(captured.captured_queries),
            "db_ms": round(sum(float(q["time"]) for q in captured.captured_queries) * 1000, 1)}


def readers(runs: int = 20) -> dict[str, Any]:
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    workers.CACHE_SECONDS = 10**9  # the workers' answer, asked once (see the docstring)
    admin = reverse("admin:dispatcher_dispatch_changelist")

    def get(url: str, params: dict[str, str] | None = None) -> Callable[[], None]:
        def run() -> None:
            response = client.get(url, params or {})
            assert response.status_code == 200, (url, params, response.status_code)
        return run

    def status() -> None:
        call_command("dispatcher_status", stdout=io.StringIO(), stderr=io.StringIO())

    scraper = Client(HTTP_AUTHORIZATION=f"Bearer {os.environ['DISPATCHER_METRICS_TOKEN']}")

    def scrape() -> None:
        assert scraper.get(reverse("dispatcher:metrics")).status_code == 200

    dashboard = get(reverse("dispatcher:dashboard"))
    found: dict[str, Any] = {
        "dashboard_ms": _median_ms(dashboard, runs),
        "metrics_ms": _median_ms(scrape, runs),
        "status_ms": _median_ms(status, runs),
        "dashboard_db": _queries(dashboard),
        "metrics_db": _queries(scrape),
        "status_db": _queries(status),
    }
    admin_ms = {}
    for label, params in (("unfiltered", {}),
                          *((f"status={s}", {"status__exact": s})
                            for s in ("sent", "failed", "cancelled", "pending", "processing", "error")),
                          *((f"messenger={m}", {"messenger": m}) for m in ("smtp", "hook", "null")),
                          ("status=failed&messenger=null", {"status__exact": "failed", "messenger": "null"}),
                          ("message type (capped count)", {"message__message_type": "plain"})):
        admin_ms[label] = _median_ms(get(admin, params), max(5, runs // 2))
    found["admin_ms"] = admin_ms
    found["admin_db"] = {label: _queries(get(admin, params)) for label, params in (
        ("status=failed", {"status__exact": "failed"}), ("messenger=null", {"messenger": "null"}))}
    found["admin_worst_filtered_ms"] = max(v for k, v in admin_ms.items() if k != "unfiltered")
    return found


class _Rollback(Exception):
    pass


def overhead(reps: int = 200) -> dict[str, Any]:
    """What the counter triggers add to the hot path: a batch of 100 (claim,
    read back, five outcome writes of 20, as bench/history.py measures it) and
    a fan-out of 1,000 (COPY), each in a transaction rolled back, with the
    triggers on and off (``ALTER TABLE ... DISABLE TRIGGER`` inside the
    transaction, not timed), in turns so load from elsewhere falls on both."""
    import random
    import uuid

    from django.db import transaction
    from django.utils import timezone

    from dispatcher.bulk import create_dispatches
    from dispatcher.delivery import claim
    from dispatcher.models import Dispatch, Message

    held = list(Dispatch.objects.filter(status="pending", messenger="smtp", address__startswith="live")
                .order_by("id").values_list("pk", flat=True))
    batches = [held[i:i + 100] for i in range(0, len(held) - 99, 100)]
    message = Message.objects.order_by("-id").first()
    targets = [("smtp", f"over{i}@example.org", None) for i in range(1000)]
    triggers = [(t, f"{t}_count_{e}") for t in ("dispatcher_dispatch", "dispatcher_dispatcherror")
                for e in ("insert", "update", "delete")]

    def batch() -> None:
        ids, token, now = random.choice(batches), uuid.uuid4(), timezone.now()
        claim("smtp", ids, token)
        rows = list(Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING)
                    .select_related("recipient").order_by("message_id", "id"))
        owned = Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING)
        for i in range(0, len(rows), 20):
            owned.filter(pk__in=[d.pk for d in rows[i:i + 20]]).update(
                status=Dispatch.Status.SENT, dispatched_at=now, lease_expires_at=None, claim_token=None)

    def fan_out() -> None:
        now = timezone.now()
        create_dispatches(message, targets, now, now, now)

    def timed(work: Callable[[], None], on: bool) -> float:
        try:
            with transaction.atomic():
                if not on:
                    for table, name in triggers:
                        _sql(f"ALTER TABLE {table} DISABLE TRIGGER {name}")
                started = time.perf_counter()
                work()
                spent = time.perf_counter() - started
                raise _Rollback
        except _Rollback:
            return spent * 1000

    found: dict[str, Any] = {}
    for label, work in (("batch of 100 (claim, read back, 5 outcome writes)", batch),
                        ("fan-out of 1,000 (COPY)", fan_out)):
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(reps):
            for on in random.sample([True, False], 2):
                times[on].append(timed(work, on))
        on_ms, off_ms = statistics.median(times[True]), statistics.median(times[False])
        found[label] = {"triggers_on_ms": round(on_ms, 2), "triggers_off_ms": round(off_ms, 2),
                        "added_percent": round(100 * (on_ms - off_ms) / off_ms, 1)}
    return found


def _child(*args: str) -> dict[str, Any]:
    """Run ``python -m bench.scale <args>`` and return the JSON of its last line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-m", "bench.scale", *args], env=env,
                         capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _own_peak_mb() -> float:
    """This process's VmHWM (peak resident set), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fanout(n: int) -> dict[str, Any]:
    """One streamed fan-out to ``n`` addresses in a child process: time and peak RSS."""
    first = _last_message()
    result = _child("--fanout-child", str(n))
    from tests.services import purge_broker

    purge_broker()
    # Its rows go, as the scheduling step's do: a million pending rows left at
    # the top of the ids would be the next run's backlog, not its history.
    made = [int(row[0]) for row in _sql("SELECT id FROM dispatcher_message WHERE id > %s", [first])]
    result["deleted"] = _delete_messages(made)
    return result


def _fanout_child(n: int) -> None:
    from dispatcher.api import recipient_stream, schedule_messages

    before = _own_peak_mb()
    addresses = (f"fan{i}@example.org" for i in range(n))
    started = time.perf_counter()
    message = "Scale: one message to many"  # a plain text message, which the null messenger takes
    result = schedule_messages(message, recipient_stream("null", addresses))
    seconds = time.perf_counter() - started
    print(json.dumps({"recipients": n, "count": result.count, "seconds": round(seconds, 1),
                      "per_second": round(n / seconds), "peak_rss_mb": round(_own_peak_mb(), 1),
                      "rss_before_mb": round(before, 1)}))


def _last_message() -> int:
    return int(_sql("SELECT coalesce(max(id), 0) FROM dispatcher_message")[0][0])


def _delete_messages(ids: list[int]) -> int:
    """Delete these messages and their dispatches (and attempts) by plain ``DELETE``:
    the counter triggers see it, so the counters stay true without a reconciliation."""
    if not ids:
        return 0
    _sql("DELETE FROM dispatcher_dispatcherror WHERE dispatch_id IN "
         "(SELECT id FROM dispatcher_dispatch WHERE message_id = ANY(%s))", [ids])
    deleted = _sql("WITH gone AS (DELETE FROM dispatcher_dispatch WHERE message_id = ANY(%s) RETURNING 1) "
                   "SELECT count(*) FROM gone", [ids])[0][0]
    _sql("DELETE FROM dispatcher_message WHERE id = ANY(%s)", [ids])
    return int(deleted)


def _hold_live() -> None:
    """Make the live backlog current: a task holds each pending or erroring row
    (``queued_at`` now) and each processing row's lease runs an hour more.

    Without it the requeue sweep would publish the bench's smtp and hook
    backlog once it is older than DISPATCHER_REQUEUE_AFTER (and the drain's
    worker would try to deliver it), and the leases sweep would fail the
    processing rows an hour after the load: the table would change under the
    figures from one size, or one run, to the next."""
    _sql("UPDATE dispatcher_dispatch SET queued_at = now() WHERE status IN ('pending', 'error')")
    _sql("UPDATE dispatcher_dispatch SET lease_expires_at = now() + interval '1 hour' "
         "WHERE status = 'processing'")


def scheduling(n: int) -> dict[str, Any]:
    """A fan-out to ``n`` recipients onto the table as it is (see the module's
    docstring, 3), then its rows deleted, so it leaves neither tasks nor rows."""
    before = _last_message()
    found = fanout(n)
    started = time.perf_counter()
    ids = [row[0] for row in _sql("SELECT id FROM dispatcher_message WHERE id > %s", [before])]
    found["deleted"] = _delete_messages(ids)
    found["delete_s"] = round(time.perf_counter() - started, 1)
    return found


def draining(n: int) -> dict[str, Any]:
    """``n`` pending rows published by the requeue sweep and drained by a worker
    with two processes (see the module's docstring, 4); deleted after."""
    # bench/__main__.py's drain helpers, imported here: the children need none of what it loads.
    from bench.__main__ import insert_backlog, peak_rss_kb, start_worker
    from tests.services import purge_broker, wait_for

    _hold_live()  # only this step's rows are due
    purge_broker()
    t0 = time.perf_counter()
    insert_backlog(n)
    message = _last_message()
    t1 = time.perf_counter()
    while sweeps.requeue_due():
        pass
    t2 = time.perf_counter()
    peak = 0
    worker = start_worker("scale-drain", 2)
    start = time.perf_counter()
    try:
        def drained() -> bool:
            nonlocal peak
            peak = max(peak, peak_rss_kb(worker.proc.pid))
            return not _sql("SELECT 1 FROM dispatcher_dispatch WHERE message_id = %s "
                            "AND status IN ('pending', 'processing') LIMIT 1", [message])

        wait_for(drained, 3600, 0.5, "the drain's rows to be sent")
        elapsed = time.perf_counter() - start
        peak = max(peak, peak_rss_kb(worker.proc.pid))
    finally:
        worker.stop()
    sent, span = _sql("SELECT count(*), extract(epoch FROM max(dispatched_at) - min(dispatched_at)) "
                      "FROM dispatcher_dispatch WHERE message_id = %s AND status = 'sent'", [message])[0]
    t3 = time.perf_counter()
    deleted = _delete_messages([message])
    delete_s = time.perf_counter() - t3
    purge_broker()
    return {"backlog": n, "insert_s": round(t1 - t0, 1), "publish_s": round(t2 - t1, 2), "sent": sent,
            "drain_s": round(elapsed, 1),
            "drained_per_s": round((sent - 1) / float(span)) if span else 0,
            "worker_peak_rss_mb": round(peak / 1024, 1), "deleted": deleted, "delete_s": round(delete_s, 1)}


def sweep_costs() -> dict[str, Any]:
    """Each sweep once, in a process of its own (see the module's docstring, 5)."""
    from tests.services import purge_broker

    _hold_live()
    found = _child("--sweeps-child")
    purge_broker()  # nothing should have been requeued; if something was, no later step drains it
    return found


def _sweeps_child() -> None:
    def partitions_report() -> dict[str, Any]:
        try:
            report = sweeps.maintain_partitions(days=RETENTION_DAYS)
        except PartitionMaintenanceError as exc:
            return {"error": str(exc)}
        return {"created": len(report.created), "dropped": len(report.dropped), "held": len(report.held)}

    runs: list[tuple[str, Callable[[], Any]]] = [
        ("requeue_due", sweeps.requeue_due),
        ("reclaim_expired_leases", sweeps.reclaim_expired_leases),
        ("cleanup_sent", lambda: sweeps.cleanup_sent(days=RETENTION_DAYS)),
        ("maintain_partitions", partitions_report),
        ("compact_counters", sweeps.compact_counters),
        ("reconcile_counters", sweeps.reconcile_counters),
        ("report_undelivered", sweeps.report_undelivered),
    ]
    connection.ensure_connection()  # beat's worker has its connection open: not counted
    before = _own_peak_mb()
    found: dict[str, Any] = {}
    # report_undelivered mails ADMINS: nowhere but memory here.
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        for name, run in runs:
            started = time.perf_counter()
            result = run()
            found[name] = {"ms": round((time.perf_counter() - started) * 1000, 1), "result": result}
    found["peak_rss_mb"] = round(_own_peak_mb(), 1)
    found["rss_before_mb"] = round(before, 1)
    print(json.dumps(found))


def _short(size: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size:,}"


def _figure(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value < 100:
        return f"{value:.1f}"
    return f"{round(value):,}"


def cost_table(results: dict[str, Any]) -> str:
    """The "how cost grows" table (issue #19, point 6), in markdown: an operation
    and its unit a row, a size of the history a column."""
    work = results.get("work", WORK)

    def at(*path: str) -> Callable[[dict[str, Any]], Any]:
        def get(found: dict[str, Any]) -> Any:
            for key in path:
                if not isinstance(found, dict) or key not in found:
                    return None
                found = found[key]
            return found
        return get

    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        (f"scheduling: fan-out of {work:,} (its own process), s", at("scheduling", "seconds")),
        ("scheduling, dispatches/s", at("scheduling", "per_second")),
        ("scheduling, peak RSS, MB", at("scheduling", "peak_rss_mb")),
        (f"requeue sweep publishing {work:,} due rows, s", at("draining", "publish_s")),
        (f"draining {work:,} (a worker, 2 processes, null messenger), dispatches/s",
         at("draining", "drained_per_s")),
        ("draining, peak RSS of the largest worker process, MB", at("draining", "worker_peak_rss_mb")),
        ("dashboard page, ms", at("dashboard_ms")),
        ("metrics scrape, ms", at("metrics_ms")),
        ("`dispatcher_status`, ms", at("status_ms")),
        ("admin list, unfiltered, ms", at("admin_ms", "unfiltered")),
        ("admin list, worst filter, ms", at("admin_worst_filtered_ms")),
        ("sweep: requeue due (nothing due), ms", at("sweeps", "requeue_due", "ms")),
        ("sweep: reclaim expired leases (none expired), ms", at("sweeps", "reclaim_expired_leases", "ms")),
        ("sweep: clean up sent rows (none past retention), ms", at("sweeps", "cleanup_sent", "ms")),
        ("sweep: maintain partitions (none to drop), ms", at("sweeps", "maintain_partitions", "ms")),
        ("sweep: compact counters, ms", at("sweeps", "compact_counters", "ms")),
        ("sweep: reconcile counters (daily; a full count), ms", at("sweeps", "reconcile_counters", "ms")),
        ("sweep: report undelivered (last 24 h), ms", at("sweeps", "report_undelivered", "ms")),
        ("sweeps, peak RSS of their process, MB", at("sweeps", "peak_rss_mb")),
        ("counter keys the reconciliation corrected (0: consistent)",
         at("sweeps", "reconcile_counters", "result")),
    ]
    sizes = results["sizes"]
    lines = ["| history rows | " + " | ".join(_short(int(size)) for size in sizes) + " |",
             "| --- |" + " --- |" * len(sizes)]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_figure(get(found)) for found in sizes.values()) + " |")
    return "\n".join(lines)


def main(sizes: list[int], fanouts: list[int], work: int = WORK) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": {}, "fanout": {}, "work": work}
    # A table already grown (an earlier run) is measured again as it is, or grown further.
    if sizes and _sql(HISTORY)[0][0] > sizes[0]:
        empty()
    for size in sizes:
        print(f"scale: filling {size:,} rows ...", file=sys.stderr, flush=True)
        found = results["sizes"][size] = {**grow(size), **readers()}
        if work:
            print(f"scale: scheduling {work:,} onto {size:,} rows ...", file=sys.stderr, flush=True)
            found["scheduling"] = scheduling(work)
            print(f"scale: draining {work:,} ...", file=sys.stderr, flush=True)
            found["draining"] = draining(work)
        print("scale: the sweeps ...", file=sys.stderr, flush=True)
        found["sweeps"] = sweep_costs()
        print(f"  {json.dumps(found)}", file=sys.stderr, flush=True)
    if sizes:
        print("scale: what the triggers add to the hot path ...", file=sys.stderr, flush=True)
        results["trigger_overhead"] = overhead()
        print(f"  {json.dumps(results['trigger_overhead'])}", file=sys.stderr, flush=True)
    for n in fanouts:
        print(f"scale: fan-out to {n:,} ...", file=sys.stderr, flush=True)
        results["fanout"][n] = fanout(n)
        print(f"  {json.dumps(results['fanout'][n])}", file=sys.stderr, flush=True)
    largest = results["sizes"][max(sizes)] if sizes else None
    if largest:
        met = {
            "dashboard": largest["dashboard_ms"] <= TARGETS["dashboard"],
            "metrics": largest["metrics_ms"] <= TARGETS["metrics"],
            "status": largest["status_ms"] <= TARGETS["status"],
            "admin": largest["admin_worst_filtered_ms"] <= TARGETS["admin"],
        }
        results["targets_met"] = met
    for found in results["fanout"].values():
        found["ok"] = (found["peak_rss_mb"] <= FANOUT_TARGET["rss_mb"]
                       and found["per_second"] >= FANOUT_TARGET["per_second"])
    results["ok"] = all(results.get("targets_met", {}).values()) and all(
        f["ok"] for f in results["fanout"].values())
    results["target"] = ("at 10M rows: dashboard <= 50 ms, metrics <= 20 ms, dispatcher_status <= 100 ms, "
                         "admin filtered <= 200 ms; fan-out of 1M: peak RSS <= 250 MB, >= 40k dispatches/s")
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="history sizes, comma-separated (default 10k,100k,1M,10M; "
                                        "--quick: 10k,100k)")
    parser.add_argument("--fanouts", help="fan-outs onto the largest table (default 1000000; --quick: none)")
    parser.add_argument("--work", type=int,
                        help=f"scheduled and drained at each size (default {WORK:,}; "
                             "--quick: 20,000; 0: skip)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--fanout-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sweeps-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fanout_child:
        _fanout_child(args.fanout_child)
        sys.exit(0)
    if args.sweeps_child:
        _sweeps_child()
        sys.exit(0)
    call_command("migrate", verbosity=0)
    if args.quick:
        sizes_arg, fanouts_arg, work = "10000,100000", "", 20_000
    else:
        sizes_arg, fanouts_arg, work = "10000,100000,1000000,10000000", "1000000", WORK
    sizes_arg = sizes_arg if args.sizes is None else args.sizes
    fanouts_arg = fanouts_arg if args.fanouts is None else args.fanouts
    work = work if args.work is None else args.work
    report = main([int(s) for s in sizes_arg.split(",") if s], [int(s) for s in fanouts_arg.split(",") if s],
                  work)
    out = settings.VAR_DIR / "bench" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print("\nHow cost grows with the history:\n")
    print(cost_table(report))
