"""``make bench``: fan-out, throughput, latency, scale-out and memory, side by side.

Runs on PostgreSQL and Redis (``DATABASE_URL``, ``CELERY_BROKER_URL``;
defaults in bench/settings.py), starts its own worker processes and an
aiosmtpd sink, prints one table and writes it to ``var/bench/results.json``.
Warm-up is excluded where it says so. ``--only fanout,latency`` runs some;
``--quick`` runs smaller sizes (for a smoke test, not for the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import smtplib
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def _ensure_database() -> None:
    """Create the bench's PostgreSQL database on first use."""
    import dj_database_url
    import psycopg

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatcher_bench")
    conf = dj_database_url.parse(url)
    if "postgresql" not in conf["ENGINE"]:
        return
    with psycopg.connect(host=conf["HOST"], port=conf["PORT"] or 5432, user=conf["USER"],
                         password=conf["PASSWORD"] or None, dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [conf["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{conf["NAME"]}"')


_ensure_database()

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.sink import SinkProcess  # noqa: E402
from dispatcher.api import recipients, schedule_messages  # noqa: E402
from dispatcher.bulk import create_dispatches  # noqa: E402
from dispatcher.messages import EmailTextMessage  # noqa: E402
from dispatcher.models import Dispatch, Message  # noqa: E402
from dispatcher.sweeps import requeue_due  # noqa: E402
from messengers.base import Rendered  # noqa: E402
from messengers.smtp import SMTPMessenger  # noqa: E402
from tests.services import Worker, free_port, purge_broker, wait_for  # noqa: E402

BODY = "Hello,\n\nthis is the benchmark's message, the same for every recipient and every run.\n" * 3
SUBJECT = "Benchmark"
WARMUP = 200


def fresh() -> None:
    """Empty tables and broker, so every benchmark starts from the same state."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE dispatcher_dispatcherror, dispatcher_dispatch, dispatcher_message CASCADE"
        )
    purge_broker()


def worker_env(smtp_port: int | None = None, **extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DISPATCHER_LOG_LEVEL": "WARNING",
    }
    if smtp_port:
        env["DISPATCHER_SMTP_PORT"] = str(smtp_port)
    env.update(extra)
    return env


def start_worker(name: str, concurrency: int = 1, smtp_port: int | None = None, **extra: str) -> Worker:
    return Worker(name, worker_env(smtp_port, **extra), concurrency,
                  log_dir=settings.VAR_DIR / "bench" / "logs", extra_args=("-I", "bench.naive"))


def new_sink() -> SinkProcess:
    return SinkProcess(free_port(), settings.VAR_DIR / "bench" / "sink.log")


def rate(times: list[float], skip: int = WARMUP) -> float:
    """Messages per second between the ``skip``-th arrival and the last one."""
    times = sorted(times)[skip:]
    return (len(times) - 1) / (times[-1] - times[0])


# -- fan-out ---------------------------------------------------------------------------------------
def bench_fanout(n: int) -> dict[str, Any]:
    def run(count: int) -> tuple[float, float, int]:
        fresh()
        addresses = [f"user{i}@example.org" for i in range(count)]
        t0 = time.perf_counter()
        targets = recipients("smtp", addresses)
        t1 = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            schedule_messages(EmailTextMessage(SUBJECT, BODY), targets)
        t2 = time.perf_counter()
        # COPY goes to the driver directly, past Django's query log: one per message.
        copies = 1 if connection.vendor == "postgresql" and count > 50 else 0
        return t1 - t0, t2 - t1, len(queries.captured_queries) + copies

    run(1000)  # warm-up: connections, caches
    _, _, queries_1k = run(1000)
    validate_s, schedule_s, queries_n = run(n)
    fresh()
    return {
        "recipients": n,
        "recipients_s": round(validate_s, 3),
        "schedule_s": round(schedule_s, 3),
        "dispatches_per_s": round(n / schedule_s),
        "queries_1k": queries_1k,
        f"queries_{n // 1000}k": queries_n,
        "target": "schedule_s <= 3 and queries constant",
        "ok": schedule_s <= 3 and queries_1k == queries_n,
    }


# -- throughput ------------------------------------------------------------------------------------
def bare_loop(port: int, n: int) -> None:
    """The machine's limit: the same mails, built the same way, over one connection."""
    build = SMTPMessenger("bench@example.org").build_email
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i in range(n):
            mail = SimpleNamespace(pk=i + 1, message_id=1, address=f"user{i}@example.org",
                                   rendered=Rendered(subject=SUBJECT, text=BODY))
            smtp.send_message(build(mail))


def bench_throughput(n: int) -> dict[str, Any]:
    fresh()
    sink = new_sink()
    try:
        bare_loop(sink.port, n)
        wait_for(lambda: sink.count() >= n, 60, 0.1)
        bare = rate(sink.arrivals())

        sink.reset()
        schedule_messages(EmailTextMessage(SUBJECT, BODY), recipients("smtp", [f"user{i}@example.org"
                                                                              for i in range(n)]))
        worker = start_worker("throughput", 1, sink.port)
        try:
            wait_for(lambda: sink.count() >= n, 600, 0.2, "the worker to deliver them all")
            wait_for(lambda: Dispatch.objects.filter(status="sent").count() == n, 60, 0.2)
            ours = rate(sink.arrivals())

            naive_n = max(WARMUP * 2, n // 10)
            sink.reset()
            fresh()
            from bench.naive import naive_send

            for i in range(naive_n):
                naive_send.delay(f"user{i}@example.org", SUBJECT, BODY)
            wait_for(lambda: sink.count() >= naive_n, 600, 0.2, "the naive baseline")
            naive = rate(sink.arrivals())
        finally:
            worker.stop()
    finally:
        sink.stop()
        fresh()
    return {
        "emails": n,
        "bare_smtplib_per_s": round(bare),
        "dispatcher_per_s": round(ours),
        "naive_per_s": round(naive),
        "naive_emails": naive_n,
        "vs_bare": round(ours / bare, 2),
        "gain_over_naive": round(ours / naive, 1),
        "target": "vs_bare >= 0.8",
        "ok": ours / bare >= 0.8,
    }


# -- latency ---------------------------------------------------------------------------------------
def arrived_after(sink: SinkProcess, before: int) -> bool:
    return sink.count() > before


def bench_latency(n: int) -> dict[str, Any]:
    fresh()
    sink = new_sink()
    worker = start_worker("latency", 1, sink.port)
    latencies: list[float] = []
    try:
        for i in range(n + 20):
            before = sink.count()
            schedule_messages(EmailTextMessage(SUBJECT, BODY), recipients("smtp", f"l{i}@example.org"))
            returned = time.time()
            wait_for(partial(arrived_after, sink, before), 30, 0.0005)
            if i >= 20:  # the first 20 are warm-up
                latencies.append((sink.arrivals()[-1] - returned) * 1000)
            time.sleep(0.02)  # an idle worker for every message
    finally:
        worker.stop()
        sink.stop()
        fresh()
    cuts = statistics.quantiles(latencies, n=100)
    p50, p95, p99 = statistics.median(latencies), cuts[94], cuts[98]
    return {
        "messages": n,
        "p50_ms": round(p50, 1),
        "p95_ms": round(p95, 1),
        "p99_ms": round(p99, 1),
        "broker": settings.CELERY_BROKER_URL.split("://")[0],
        "target": "p50 <= 15 ms, p99 <= 60 ms",
        "ok": p50 <= 15 and p99 <= 60,
    }


# -- scale-out -------------------------------------------------------------------------------------
def drain_time(n: int, concurrency: int) -> float:
    fresh()
    worker = start_worker(f"scale{concurrency}", concurrency)
    try:
        start = time.perf_counter()
        schedule_messages("scale", recipients("slow", [f"a{i}" for i in range(n)]))
        wait_for(lambda: Dispatch.objects.filter(status="sent").count() == n, 900, 0.05)
        return time.perf_counter() - start
    finally:
        worker.stop()


def bench_scaleout(n: int) -> dict[str, Any]:
    one = drain_time(n, 1)
    four = drain_time(n, 4)
    fresh()
    return {
        "dispatches": n,
        "latency_per_send_ms": 20,
        "one_process_s": round(one, 2),
        "four_processes_s": round(four, 2),
        "speedup": round(one / four, 2),
        "target": "speedup >= 3.5",
        "ok": one / four >= 3.5,
    }


# -- memory ----------------------------------------------------------------------------------------
def peak_rss_kb(pid: int) -> int:
    """VmHWM (peak resident set) of a process and its children, the largest one."""
    peaks = []
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
        except OSError:
            continue
    return max(peaks or [0])


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def bench_memory(rows: int) -> dict[str, Any]:
    fresh()
    now = timezone.now()
    message = Message.objects.create(message_type="plain", context={"text": "backlog"})
    inserted = 0
    while inserted < rows:  # rows inserted directly: no task was ever published for them
        chunk = min(100_000, rows - inserted)
        create_dispatches(message, [("null", f"a{inserted + i}", None) for i in range(chunk)], now, None, now)
        inserted += chunk
    worker = start_worker("memory", 1)
    peak = 0
    start = time.perf_counter()
    try:
        def drained() -> bool:
            nonlocal peak
            requeue_due()  # what beat runs; publishes the backlog in bounded chunks
            peak = max(peak, peak_rss_kb(worker.proc.pid))
            return not Dispatch.objects.filter(status__in=["pending", "processing"]).exists()

        wait_for(drained, 3600, 1.0, "the backlog to drain")
        elapsed = time.perf_counter() - start
        peak = max(peak, peak_rss_kb(worker.proc.pid))
    finally:
        worker.stop()
        fresh()
    peak_mb = peak / 1024
    return {
        "backlog": rows,
        "drain_s": round(elapsed, 1),
        "drained_per_s": round(rows / elapsed),
        "worker_peak_rss_mb": round(peak_mb, 1),
        "target": "worker peak RSS <= 150 MB",
        "ok": peak_mb <= 150,
    }


# -- digests and throttle keys (bench/beyond.py) ----------------------------------------------------
def bench_digest(n: int) -> dict[str, Any]:
    from bench import beyond

    sink = new_sink()
    try:
        return beyond.bench_digest(
            n, worker_env(), sink,
            lambda name, concurrency, port, extra: Worker(name, worker_env(port), concurrency,
                                                          log_dir=settings.VAR_DIR / "bench" / "logs",
                                                          extra_args=extra),
            fresh)
    finally:
        sink.stop()


def bench_throttle(n: int) -> dict[str, Any]:
    from bench import beyond

    return beyond.bench_throttle(n, fresh)


BENCHES: dict[str, tuple[Callable[[int], dict[str, Any]], int, int]] = {
    # name: (function, size, --quick size)
    "fanout": (bench_fanout, 100_000, 10_000),
    "throughput": (bench_throughput, 20_000, 2_000),
    "latency": (bench_latency, 500, 100),
    "scaleout": (bench_scaleout, 2_000, 400),
    "memory": (bench_memory, 1_000_000, 50_000),
    "digest": (bench_digest, 100_000, 8_000),
    "throttle": (bench_throttle, 6_000, 600),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args()
    # Every benchmark writes its logs and sink files here; a fresh clone has no var/ yet.
    (settings.VAR_DIR / "bench" / "logs").mkdir(parents=True, exist_ok=True)
    call_command("migrate", verbosity=0)
    results: dict[str, Any] = {}
    for name in args.only.split(","):
        func, size, quick = BENCHES[name]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = func(quick if args.quick else size)
        print(f"  {json.dumps(results[name])}", file=sys.stderr, flush=True)
    report = {
        "date": timezone.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
                   f"{platform.python_version()}, {platform.platform()}",
        "database": connection.vendor,
        "broker": settings.CELERY_BROKER_URL.split("://")[0],
        "quick": args.quick,
        "results": results,
    }
    out = settings.VAR_DIR / "bench" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{'benchmark':<12} {'result':<90} target met")
    for name, result in results.items():
        figures = ", ".join(f"{k}={v}" for k, v in result.items() if k not in {"target", "ok"})
        print(f"{name:<12} {figures:<90} {'yes' if result['ok'] else 'NO'}")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
