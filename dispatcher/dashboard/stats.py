"""What operators look at, with a fixed number of queries that do not scan the history.

The dashboard, the Prometheus collector and ``manage.py dispatcher_status``
all read from here, so they agree. Counts by messenger and status, and the
failed attempts by messenger, come from :mod:`dispatcher.counters` (exact,
kept by the database as rows change): one GROUP BY over a small table. The
rest is one aggregate or LIMITed query each, through an index that holds only
the rows asked about: due and oldest due (claimable rows: the backlog), sent
per minute and send latency (the last hour's sent rows), recent failures (the
newest failed rows). The queries, and the rows each reads, grow with the
backlog and the last hour's traffic, never with the history kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, OuterRef, Q, Subquery, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from .. import counters, limiter
from ..models import Dispatch, DispatchCounter, DispatchError
from ..registry import get_registered_messenger_objects

STATUSES: tuple[str, ...] = tuple(Dispatch.Status.values)

#: Upper bounds (seconds) of the send latency histogram buckets.
LATENCY_BUCKETS: tuple[float, ...] = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


def counts_by_messenger_status() -> dict[str, dict[str, int]]:
    """``{messenger: {status: count}}`` for every messenger with rows: the
    counters (one GROUP BY over a few thousand rows), exact, not a count of
    the dispatch table."""
    return counters.totals(DispatchCounter.Kind.DISPATCH)


def known_messengers(counts: dict[str, Any] | None = None) -> list[str]:
    """Registered messengers plus any that still have rows (e.g. removed from settings)."""
    return sorted(set(get_registered_messenger_objects()) | set(counts or {}))


def backlog(now: datetime | None = None, counts: dict[str, dict[str, int]] | None = None,
            ) -> tuple[dict[str, int], timedelta | None]:
    """What is due now per messenger, and how long the longest-waiting due
    PENDING dispatch has waited: what the dashboard, the metrics and
    ``dispatcher_status`` read.

    Where the counters are kept (see :mod:`dispatcher.counters`), due is the
    claimable rows they count (``counts``, when the caller has read them
    already) less those not due yet: a read of the waiting index over the
    rows due later (retries waiting out their backoff, messages scheduled
    ahead), and the oldest due is the first due entry of the same index. A
    backlog of millions due now then costs what a handful does; counting
    them, as before, read every one of them (0.9 s for 2.2 million).
    Elsewhere the due rows are counted.
    """
    now = now or timezone.now()
    if not counters.kept():
        return _counted_backlog(now)
    if counts is None:
        counts = counts_by_messenger_status()
    waiting = dict(
        Dispatch.objects.order_by()
        .filter(status__in=Dispatch.CLAIMABLE, next_attempt_at__gt=now)
        .values_list("messenger")
        .annotate(n=Count("id"))
    )
    due = {}
    for messenger, by_status in counts.items():
        n = sum(by_status.get(s, 0) for s in Dispatch.CLAIMABLE) - waiting.get(messenger, 0)
        if n > 0:
            due[messenger] = n
    return due, oldest_due_pending(now)


def _counted_backlog(now: datetime) -> tuple[dict[str, int], timedelta | None]:
    """:func:`backlog` without counters: one pass over the due claimable rows."""
    rows = (
        Dispatch.objects.order_by()
        .filter(status__in=Dispatch.CLAIMABLE, next_attempt_at__lte=now)
        .values_list("messenger")
        .annotate(n=Count("id"), oldest=Min("next_attempt_at", filter=Q(status=Dispatch.Status.PENDING)))
    )
    due: dict[str, int] = {}
    oldest: datetime | None = None
    for messenger, n, first in rows:
        due[messenger] = n
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return due, None if oldest is None else max(timedelta(0), now - oldest)


def oldest_due_pending(now: datetime | None = None) -> timedelta | None:
    """How long the longest-waiting due PENDING dispatch has been due (None: none waiting).

    Scheduled rows (``send_at`` in the future) are not waiting yet, so the
    age is counted from ``next_attempt_at``, the moment it became due.
    """
    now = now or timezone.now()
    # The first pending entry of the waiting index (PostgreSQL proves the
    # index's condition from status = pending; naming both statuses as well
    # made it count the status twice, expect 50 rows where there were 20,000,
    # and sort them all): ordered and LIMITed, it stops there.
    oldest = (
        Dispatch.objects.order_by("next_attempt_at")
        .filter(status=Dispatch.Status.PENDING, next_attempt_at__lte=now)
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    return None if oldest is None else max(timedelta(0), now - oldest)


@dataclass
class Throughput:
    """Sent dispatches per minute: one series per messenger over ``labels``."""

    labels: list[str]
    series: dict[str, list[int]]

    @property
    def total(self) -> int:
        return sum(sum(points) for points in self.series.values())

    def as_chart_data(self) -> dict[str, Any]:
        return {"labels": self.labels, "series": self.series}


def sent_per_minute(minutes: int = 60, now: datetime | None = None) -> Throughput:
    """Dispatches SENT per minute and messenger over the last ``minutes``.

    One ``TruncMinute`` GROUP BY over the ``(status, dispatched_at)`` index;
    it returns at most ``minutes`` × messengers rows, never the dispatches.
    """
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    rows = (
        Dispatch.objects.order_by()
        .filter(status=Dispatch.Status.SENT, dispatched_at__gte=start)
        .annotate(minute=TruncMinute("dispatched_at"))
        .values_list("minute", "messenger")
        .annotate(n=Count("id"))
    )
    slots = [start + timedelta(minutes=i) for i in range(minutes)]
    index = {slot: i for i, slot in enumerate(slots)}
    series: dict[str, list[int]] = {}
    for minute, messenger, n in rows:
        i = index.get(minute)
        if i is None:  # a clock ahead of ours: count it in the last minute
            i = minutes - 1
        series.setdefault(messenger, [0] * minutes)[i] += n
    return Throughput([slot.strftime("%H:%M") for slot in slots], dict(sorted(series.items())))


def recent_failures(limit: int = 25, messenger: str | None = None,
                    messengers: list[str] | None = None) -> list[Dispatch]:
    """The latest dispatches that failed or are waiting for a retry, with their last error.

    One query: the newest ``limit`` rows in FAILED or ERROR, each annotated
    with its latest DispatchError (``last_error_class``, ``last_error``,
    ``last_error_at``) through correlated subqueries on the error's
    ``dispatch_id`` index. ``messengers`` (every alias that has rows) changes
    nothing in the result but lets the database use the ``(messenger, status)``
    index instead of walking the whole table backwards by id when failures
    are rare among millions of sent rows.
    """
    latest = DispatchError.objects.filter(dispatch=OuterRef("pk")).order_by("-id")
    qs = Dispatch.objects.filter(status__in=(Dispatch.Status.FAILED, Dispatch.Status.ERROR))
    if messenger:
        qs = qs.filter(messenger=messenger)
    elif messengers:
        qs = qs.filter(messenger__in=messengers)
    return list(
        qs.select_related("message")
        .annotate(
            last_error_class=Subquery(latest.values("error_class")[:1]),
            last_error=Subquery(latest.values("text")[:1]),
            last_error_at=Subquery(latest.values("created")[:1]),
        )
        .order_by("-id")[:limit]
    )


def errors_by_messenger(by_status: dict[str, dict[str, int]] | None = None) -> dict[str, dict[bool, int]]:
    """Failed attempts recorded (DispatchError rows) per messenger and permanence, from the counters.

    Rows go away with their dispatch when the cleanup sweep deletes old
    SENT dispatches, or their month is dropped, so this is a count of what
    the table holds, not a counter since the beginning of time. ``by_status``:
    the error counters when the caller read them already.
    """
    if by_status is None:
        by_status = counters.totals(DispatchCounter.Kind.ERROR)
    return {
        messenger: {status == "permanent": n for status, n in statuses.items()}
        for messenger, statuses in by_status.items()
    }


@dataclass
class LatencyHistogram:
    """Cumulative bucket counts of send latency for one messenger."""

    buckets: list[tuple[float, int]]  # (upper bound in seconds, count <= bound), +Inf last
    count: int
    sum_seconds: float


def send_latency(window_seconds: int = 3600, now: datetime | None = None) -> dict[str, LatencyHistogram]:
    """Latency (Message created → dispatch SENT) of dispatches sent in the last ``window_seconds``.

    Computed at scrape time in one aggregate query: a conditional COUNT per
    bucket and a SUM, grouped by messenger, over rows found through the
    ``(status, dispatched_at)`` index. Every worker on every host writes
    ``dispatched_at``, so the histogram covers them all without sharing
    process-local metrics. Scheduled messages (``send_at``) include their
    wait: the latency is what the person who scheduled the message sees.
    """
    now = now or timezone.now()
    latency = ExpressionWrapper(F("dispatched_at") - F("message__created"), output_field=DurationField())
    aggregates: dict[str, Any] = {
        f"le_{i}": Count("id", filter=Q(latency__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(LATENCY_BUCKETS)
    }
    aggregates["total"] = Count("id")
    aggregates["latency_sum"] = Sum("latency")
    rows = (
        Dispatch.objects.order_by()
        .filter(status=Dispatch.Status.SENT, dispatched_at__gte=now - timedelta(seconds=window_seconds))
        .annotate(latency=latency)
        .values("messenger")
        .annotate(**aggregates)
    )
    result = {}
    for row in rows:
        buckets = [(bound, row[f"le_{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]
        buckets.append((float("inf"), row["total"]))
        total = row["latency_sum"]
        seconds = total.total_seconds() if isinstance(total, timedelta) else float(total or 0) / 1e6
        result[row["messenger"]] = LatencyHistogram(buckets, row["total"], max(0.0, seconds))
    return result


def format_age(age: timedelta | None) -> str:
    """``3d 4h``, ``5m 12s``: short and readable in a table cell."""
    if age is None:
        return "-"
    seconds = int(age.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


@dataclass
class FlowRow:
    """One messenger's flow control as operators read it."""

    messenger: str
    config: limiter.FlowConfig
    state: limiter.FlowState | None  # None: the limiter's store could not be read

    @property
    def configured(self) -> bool:
        c = self.config
        return bool(c.metered or c.concurrency > 1 or c.circuit_failures)

    @property
    def summary(self) -> str:
        """``ok``, ``paused until 12:00:03``, ``circuit open until ...``, ``rate-limited``..."""
        state = self.state
        if state is None:
            return "unknown (limiter unreachable)"
        parts = []
        if state.paused_until is not None:
            parts.append(f"paused until {_clock(state.paused_until_datetime())}")
        if state.circuit == "open":
            parts.append(f"circuit open until {_clock(state.circuit_open_until_datetime())}")
        elif state.circuit == "half-open":
            parts.append("circuit half-open (probing)")
        quota = self.config.daily_quota
        if quota is not None and (state.daily_used or 0) >= quota:
            parts.append("daily quota used up")
        if state.rate_backlog > 0:
            parts.append(f"rate-limited (next slot in {state.rate_backlog:.2f}s)")
        return "; ".join(parts) or "ok"


def _clock(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when else "-"


def flow(messengers: list[str] | None = None) -> list[FlowRow]:
    """Flow settings and live state per messenger: one read of the limiter's store each."""
    aliases = messengers if messengers is not None else known_messengers()
    states = limiter.states(aliases)
    rows = []
    for alias in aliases:
        try:
            config = limiter.flow_config(alias)
        except Exception:
            continue
        rows.append(FlowRow(alias, config, states.get(alias)))
    return rows
