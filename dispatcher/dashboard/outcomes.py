"""What happened beyond SENT and FAILED: receipts, skips, digests, fallbacks, suppressions.

For the dashboard, the Prometheus collector and ``dispatcher_status``, like
:mod:`.stats`: a fixed number of aggregate queries (GROUP BY, or counts over
the last hour through an index on the time), whatever the number of rows.

- delivered / bounced / complained: delivery receipts (``DeliveryReceipt``);
- skipped: dispatches a throttle key held back (status SKIPPED);
- digested: notifications collected into digests (``DigestItem`` rows,
  waiting in open windows or sent in a digest);
- fell back: dispatches that failed and moved on to the next channel;
- suppressed: addresses on the suppression list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from .. import counters
from ..models import DeliveryReceipt, DigestItem, Dispatch, DispatchCounter, FallbackHop, Suppression

#: The outcomes, in the order they are shown.
OUTCOMES: tuple[str, ...] = ("delivered", "bounced", "complained", "skipped", "digested", "fell_back")


@dataclass
class Outcomes:
    """Counts per outcome and messenger, and the suppression list by kind."""

    by_messenger: dict[str, dict[str, int]] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    digests_waiting: int = 0

    @property
    def totals(self) -> dict[str, int]:
        return {o: sum(row.get(o, 0) for row in self.by_messenger.values()) for o in OUTCOMES}

    def as_dict(self) -> dict[str, Any]:
        return {
            "totals": self.totals,
            "by_messenger": {alias: {o: row.get(o, 0) for o in OUTCOMES}
                             for alias, row in sorted(self.by_messenger.items())},
            "suppressed_addresses": dict(sorted(self.suppressed.items())),
            "digest_items_waiting": self.digests_waiting,
        }


def outcomes(dispatch_counts: dict[str, dict[str, int]] | None = None) -> Outcomes:
    """Every outcome per messenger: five GROUP BY queries. Skipped dispatches
    come from the counters; receipts, digest items, fallbacks and suppressions
    are counted in their own tables, all time (their cost grows with those
    tables, not with the dispatches). ``dispatch_counts``: the counters'
    totals when the caller read them already (one query fewer)."""
    result = Outcomes()

    def add(alias: str, outcome: str, n: int) -> None:
        row = result.by_messenger.setdefault(alias, {})
        row[outcome] = row.get(outcome, 0) + n

    for alias, event, n in (DeliveryReceipt.objects.order_by().values_list("dispatch__messenger", "event")
                            .annotate(n=Count("id"))):
        add(alias, event, n)
    # Skipped is a dispatch status: the counters have it, exact, without reading the rows.
    if dispatch_counts is None:
        dispatch_counts = counters.totals(DispatchCounter.Kind.DISPATCH)
    for alias, by_status in dispatch_counts.items():
        if by_status.get(Dispatch.Status.SKIPPED):
            add(alias, "skipped", by_status[Dispatch.Status.SKIPPED])
    for alias, status, n in (DigestItem.objects.order_by().values_list("window__messenger", "window__status")
                             .annotate(n=Count("id"))):
        add(alias, "digested", n)
        if status == "open":
            result.digests_waiting += n
    for alias, n in (FallbackHop.objects.order_by().filter(fell_back_at__isnull=False)
                     .values_list("dispatch__messenger").annotate(n=Count("pk"))):
        add(alias, "fell_back", n)
    result.suppressed = dict(Suppression.objects.order_by().values_list("kind").annotate(n=Count("id")))
    return result


@dataclass
class OutcomeSeries:
    """Outcomes per minute over ``labels`` (one series per outcome)."""

    labels: list[str]
    series: dict[str, list[int]]

    @property
    def total(self) -> int:
        return sum(sum(points) for points in self.series.values())

    def as_chart_data(self) -> dict[str, Any]:
        return {"labels": self.labels, "series": self.series}


def per_minute(minutes: int = 60, now: datetime | None = None) -> OutcomeSeries:
    """Each outcome per minute over the last ``minutes``: four GROUP BY queries,
    each over an index on its time (receipts by when they were recorded)."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    slots = [start + timedelta(minutes=i) for i in range(minutes)]
    index = {slot: i for i, slot in enumerate(slots)}
    series = {o: [0] * minutes for o in OUTCOMES}

    def add(outcome: str, minute: datetime, n: int) -> None:
        series[outcome][index.get(minute, minutes - 1)] += n

    for minute, event, n in (DeliveryReceipt.objects.order_by().filter(created__gte=start)
                             .annotate(minute=TruncMinute("created")).values_list("minute", "event")
                             .annotate(n=Count("id"))):
        add(event, minute, n)
    for minute, n in (Dispatch.objects.order_by().filter(status=Dispatch.Status.SKIPPED, created__gte=start)
                      .annotate(minute=TruncMinute("created")).values_list("minute").annotate(n=Count("id"))):
        add("skipped", minute, n)
    for minute, n in (DigestItem.objects.order_by().filter(created__gte=start)
                      .annotate(minute=TruncMinute("created")).values_list("minute").annotate(n=Count("id"))):
        add("digested", minute, n)
    for minute, n in (FallbackHop.objects.order_by().filter(fell_back_at__gte=start)
                      .annotate(minute=TruncMinute("fell_back_at")).values_list("minute")
                      .annotate(n=Count("pk"))):
        add("fell_back", minute, n)
    return OutcomeSeries([slot.strftime("%H:%M") for slot in slots],
                         {o.replace("_", " "): points for o, points in series.items()})
