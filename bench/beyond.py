"""Benchmarks of digests and throttle keys (``make bench``, ``--only digest,throttle``).

- ``digest``: 100,000 notifications of a digest type for 1,000 recipients in
  one window (100 events, each to every recipient), written by four producer
  processes at once; then the window closes and a worker's beat task turns
  it into digests and sends them. Exactly 1,000 digests must go out, each
  with its 100 items; measured: the producers' time, and the time from the
  window's close to the last digest received by the SMTP sink.
- ``throttle``: the cost of the throttle check per scheduled message, against
  plain scheduling of the same message, runs interleaved (the machine is
  shared: the median of many rounds of each).

This module is also what the bench's worker imports (``-I bench.beyond``) to
know the digest type, and the producers' entry point
(``python -m bench.produce_digests <events> <recipients> <first event>``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

from dispatcher.api import recipients, register_message_types, schedule_messages
from dispatcher.messages import MessageBase


class BenchDigest(MessageBase):
    alias = "bench_digest"
    title = "Benchmark digest"
    digest = timedelta(minutes=30)
    allow_user_subscription = False


register_message_types(BenchDigest)

EVENTS, RECIPIENTS, PRODUCERS = 100, 1_000, 4


def _addresses(count: int) -> list[str]:
    return [f"reader{i}@example.org" for i in range(count)]


def produce(events: int, count: int, offset: int) -> None:
    targets = recipients("smtp", _addresses(count))
    for n in range(events):
        schedule_messages(BenchDigest({"text": f"comment {offset + n}", "event": offset + n}), targets)


def bench_digest(notifications: int, env: dict[str, str], sink: Any, start_worker: Any,
                 fresh: Any) -> dict[str, Any]:
    from celery import current_app
    from django.db import connection
    from django.utils import timezone

    from dispatcher.models import DigestItem, DigestWindow, Dispatch, Message
    from tests.services import wait_for

    count = RECIPIENTS if notifications >= RECIPIENTS * PRODUCERS else max(10, notifications // 100)
    events = max(PRODUCERS, notifications // count)
    fresh()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE dispatcher_digestitem, dispatcher_digestwindow CASCADE")
    per = events // PRODUCERS
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench.produce_digests", str(per), str(count), str(i * per)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(PRODUCERS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode:
            raise RuntimeError(f"a producer failed: {err[-3000:]}")
    produce_s = time.perf_counter() - start
    written = DigestItem.objects.count()
    assert written == per * PRODUCERS * count, (written, per * PRODUCERS * count)
    assert DigestWindow.objects.filter(status="open").count() == count
    assert not Dispatch.objects.exists()

    worker = start_worker("digests", 2, sink.port, extra=("-I", "bench.beyond"))
    try:
        sink.reset()
        closed_at = time.time()
        DigestWindow.objects.update(closes_at=timezone.now())  # the window closes now
        current_app.send_task("dispatcher.close_digests", queue="dispatcher")  # as beat does
        wait_for(lambda: sink.count() >= count, 600, 0.05, "every digest to arrive")
        last = max(sink.arrivals())
        wait_for(lambda: Dispatch.objects.filter(status="sent").count() == count, 60, 0.1)
        time.sleep(1)
    finally:
        worker.stop()
    dispatches, messages = Dispatch.objects.count(), Message.objects.count()
    items = {len(m.context["items"]) for m in Message.objects.only("context").iterator(chunk_size=200)}
    received = sink.count()
    fresh()
    close_to_sent = last - closed_at
    return {
        "notifications": per * PRODUCERS * count,
        "recipients": count,
        "producers": PRODUCERS,
        "produce_s": round(produce_s, 1),
        "notifications_per_s": round(per * PRODUCERS * count / produce_s),
        "digests": dispatches,
        "mails_received": received,
        "items_per_digest": sorted(items),
        "close_to_all_sent_s": round(close_to_sent, 2),
        "target": f"exactly {count} digests of {per * PRODUCERS} items, one mail each",
        "ok": dispatches == messages == received == count and items == {per * PRODUCERS},
    }


def bench_throttle(messages: int, fresh: Any) -> dict[str, Any]:
    """Per-message time of ``schedule_messages`` with and without a throttle
    key (a new key each time: every check lets the message through, so both
    write the same rows), interleaved in rounds; then the skipped path."""
    rounds = 12
    per_round = max(50, messages // rounds)
    targets = [recipients("smtp", f"oncall{i}@example.org") for i in range(per_round)]
    plain: list[float] = []
    throttled: list[float] = []
    skipped: list[float] = []
    fresh()
    for r in range(rounds):
        for kind in (("plain", "throttled") if r % 2 else ("throttled", "plain")):
            start = time.perf_counter()
            for i, target in enumerate(targets):
                if kind == "plain":
                    schedule_messages("disk almost full", target)
                else:
                    schedule_messages("disk almost full", target, throttle_key=f"disk-{r}-{i}",
                                      throttle=timedelta(hours=3))
            (plain if kind == "plain" else throttled).append((time.perf_counter() - start) / per_round)
        fresh()
    for target in targets:  # take the key for each address once...
        schedule_messages("disk almost full", target, throttle_key="disk", throttle=timedelta(hours=3))
    for _ in range(3):  # ...then every further message is held back
        start = time.perf_counter()
        for target in targets:
            schedule_messages("disk almost full", target, throttle_key="disk", throttle=timedelta(hours=3))
        skipped.append((time.perf_counter() - start) / per_round)
    fresh()
    plain_ms, throttled_ms = statistics.median(plain) * 1000, statistics.median(throttled) * 1000
    overhead = throttled_ms / plain_ms - 1
    return {
        "messages": rounds * per_round * 2,
        "plain_ms": round(plain_ms, 3),
        "throttled_ms": round(throttled_ms, 3),
        "overhead_pct": round(overhead * 100, 1),
        "skipped_ms": round(statistics.median(skipped) * 1000, 3),
        "target": "overhead <= 10%",
        "ok": overhead <= 0.10,
    }
