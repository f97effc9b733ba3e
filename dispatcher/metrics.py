"""Prometheus metrics, computed from the database (and the broker) at scrape time.

Why at scrape time rather than counters updated in the workers: workers are
Celery prefork children on several hosts. Counters kept in their memory are
invisible to the web process that serves ``/metrics``; prometheus_client's
multiprocess mode only shares them between processes of one host (through
``PROMETHEUS_MULTIPROC_DIR``), and every worker host would then need its own
exporter. The database already holds every fact (status, ``dispatched_at``,
the Message's ``created``, each failed attempt), written by all workers on all
hosts, so one scrape of any web process sees the whole system. Each scrape runs
a fixed number of queries, none of which reads the history: counts come from
the counter table, the rest through indexes of live rows or of the last hour.

Exposed:

``dispatcher_dispatches{messenger,status}``
    Dispatch rows per messenger and status (gauge), from the counters the
    database keeps as rows change (:mod:`dispatcher.counters`): exact, and no
    scan of the table.
``dispatcher_dispatches_due{messenger}``
    Pending and erroring rows due now: the database's backlog.
``dispatcher_queue_depth{messenger,queue}``
    Messages waiting in the broker queue ``dispatch.<alias>``.
``dispatcher_broker_up``
    1 when the broker answered the queue depth query, else 0.
``dispatcher_oldest_due_pending_seconds``
    How long the longest-waiting due PENDING dispatch has been due.
``dispatcher_dispatch_errors{messenger,permanent}``
    Failed attempts recorded (DispatchError rows), i.e. retries (``permanent="false"``)
    and final failures (``permanent="true"``), from the counters too. A gauge: the
    cleanup sweep deletes the rows of old SENT dispatches.
``dispatcher_limited{messenger}``
    1 while flow control holds the messenger back: paused, circuit not
    closed, its rate saturated (the next send would wait) or its daily quota used up.
``dispatcher_paused_until_seconds{messenger}``
    Unix time until which a provider's "wait" (429, ``retry_after``) pauses
    the messenger for every worker; 0 when not paused.
``dispatcher_circuit_open{messenger}``
    1 while the messenger's circuit breaker is open or half-open (probing), else 0.
``dispatcher_circuit_failures{messenger}``
    Consecutive temporary failures the circuit breaker has counted.
``dispatcher_rate_limit_per_second{messenger}`` / ``dispatcher_daily_quota{messenger}`` /
``dispatcher_daily_quota_used{messenger}``
    The configured limits, and today's use of the quota (UTC day).
``dispatcher_flow_state_up``
    1 when the flow-control store (Redis or the database) answered.
``dispatcher_send_latency_seconds{messenger}``
    A gauge histogram of Message created → dispatch SENT for dispatches sent in
    the last ``DISPATCHER_METRICS_LATENCY_WINDOW`` seconds (default 3600).
    ``histogram_quantile(0.95, dispatcher_send_latency_seconds_bucket)`` is the
    p95 over that window, with no ``rate()`` needed.

``dispatcher_receipts{messenger,event}``
    Delivery receipts recorded: ``event`` is delivered, bounced or complained.
``dispatcher_outcomes{messenger,outcome}``
    The same with the other outcomes beyond sent and failed: ``skipped``
    (held back by a throttle key), ``digested`` (notifications collected
    into digests), ``fell_back`` (failed dispatches that moved on to the
    next channel of their chain).
``dispatcher_digest_items_waiting``
    Notifications in digest windows not closed yet.
``dispatcher_suppressed_addresses{kind}``
    Addresses on the suppression list, by messenger kind.

Protection: a staff session, or ``Authorization: Bearer <token>`` where the
token is ``settings.DISPATCHER_METRICS_TOKEN`` or the environment variable of
the same name. Without a token configured, only staff sessions get in.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import counters
from .dashboard import outcomes, stats
from .dashboard.broker import queue_depths
from .models import DispatchCounter
from .publish import dispatch_queue

DEFAULT_LATENCY_WINDOW = 3600


def latency_window() -> int:
    value = getattr(settings, "DISPATCHER_METRICS_LATENCY_WINDOW", None)
    if value is None:
        value = os.environ.get("DISPATCHER_METRICS_LATENCY_WINDOW") or DEFAULT_LATENCY_WINDOW
    return int(value)


def metrics_token() -> str:
    """The bearer token scrapers must send; empty: token access is off."""
    token = getattr(settings, "DISPATCHER_METRICS_TOKEN", None)
    if token is None:
        token = os.environ.get("DISPATCHER_METRICS_TOKEN", "")
    return str(token or "")


class DispatcherCollector(Collector):
    """Collects the dispatcher's metrics from the database and the broker on every scrape."""

    def describe(self) -> list[Metric]:
        # Nothing up front: describing would run the queries at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        kept = counters.every_total()  # dispatches and failed attempts: one query
        counts = kept.get(DispatchCounter.Kind.DISPATCH, {})
        messengers = stats.known_messengers(counts)

        dispatches = GaugeMetricFamily(
            "dispatcher_dispatches", "Dispatches per messenger and status.", labels=["messenger", "status"]
        )
        for alias in messengers:
            by_status = counts.get(alias, {})
            for status in stats.STATUSES:
                dispatches.add_metric([alias, status], by_status.get(status, 0))
        yield dispatches

        due, oldest = stats.backlog(counts=counts)
        due_metric = GaugeMetricFamily(
            "dispatcher_dispatches_due", "Pending and erroring dispatches due now.", labels=["messenger"]
        )
        for alias in messengers:
            due_metric.add_metric([alias], due.get(alias, 0))
        yield due_metric

        registered = stats.known_messengers()
        broker = queue_depths(registered)
        yield GaugeMetricFamily(
            "dispatcher_broker_up", "1 if the broker answered the queue depth query.", value=int(broker.ok)
        )
        depth = GaugeMetricFamily(
            "dispatcher_queue_depth", "Messages waiting in the broker queue of a messenger.",
            labels=["messenger", "queue"],
        )
        for alias, n in sorted(broker.depths.items()):
            depth.add_metric([alias, dispatch_queue(alias)], n)
        yield depth

        yield GaugeMetricFamily(
            "dispatcher_oldest_due_pending_seconds",
            "Seconds the longest-waiting due pending dispatch has been due (0: none).",
            value=oldest.total_seconds() if oldest else 0.0,
        )

        errors = GaugeMetricFamily(
            "dispatcher_dispatch_errors",
            "Failed attempts recorded, by messenger; permanent=false are retries.",
            labels=["messenger", "permanent"],
        )
        by_messenger = stats.errors_by_messenger(kept.get(DispatchCounter.Kind.ERROR, {}))
        for alias in sorted(set(messengers) | set(by_messenger)):
            recorded = by_messenger.get(alias, {})
            for permanent in (False, True):
                errors.add_metric([alias, str(permanent).lower()], recorded.get(permanent, 0))
        yield errors

        yield from _flow_metrics(registered)

        window = latency_window()
        latency = GaugeHistogramMetricFamily(
            "dispatcher_send_latency_seconds",
            f"Message created to dispatch sent, for dispatches sent in the last {window} s.",
            labels=["messenger"],
        )
        for alias, hist in sorted(stats.send_latency(window).items()):
            latency.add_metric(
                [alias],
                [(_le(bound), count) for bound, count in hist.buckets],
                gsum_value=hist.sum_seconds,
            )
        yield latency
        yield from outcome_metrics(counts)


def _flow_metrics(messengers: list[str]) -> Iterator[Metric]:
    rows = stats.flow(messengers)
    up = all(row.state is not None for row in rows)
    yield GaugeMetricFamily("dispatcher_flow_state_up",
                            "1 if the flow-control store (Redis or the database) answered.", value=int(up))
    families = {
        "limited": GaugeMetricFamily("dispatcher_limited", "1 while flow control holds the messenger back.",
                                     labels=["messenger"]),
        "paused": GaugeMetricFamily("dispatcher_paused_until_seconds",
                                    "Unix time until which the messenger is paused (0: not paused).",
                                    labels=["messenger"]),
        "open": GaugeMetricFamily("dispatcher_circuit_open",
                                  "1 while the circuit breaker is open or half-open.", labels=["messenger"]),
        "failures": GaugeMetricFamily("dispatcher_circuit_failures",
                                      "Consecutive temporary failures counted by the circuit breaker.",
                                      labels=["messenger"]),
        "rate": GaugeMetricFamily("dispatcher_rate_limit_per_second", "Configured rate limit (sends/s).",
                                  labels=["messenger"]),
        "quota": GaugeMetricFamily("dispatcher_daily_quota", "Configured daily quota.", labels=["messenger"]),
        "used": GaugeMetricFamily("dispatcher_daily_quota_used", "Sends counted against today's quota (UTC).",
                                  labels=["messenger"]),
    }
    for row in rows:
        labels = [row.messenger]
        if row.config.rate:
            families["rate"].add_metric(labels, row.config.rate.per_second)
        if row.config.daily_quota:
            families["quota"].add_metric(labels, row.config.daily_quota)
        state = row.state
        if state is None:
            continue
        families["limited"].add_metric(labels, int(state.limited))
        families["paused"].add_metric(labels, state.paused_until or 0)
        families["open"].add_metric(labels, int(state.circuit != "closed"))
        families["failures"].add_metric(labels, state.consecutive_failures)
        if row.config.daily_quota:
            families["used"].add_metric(labels, state.daily_used or 0)
    yield from families.values()


def _le(bound: float) -> str:
    # The same spelling as prometheus_client's own histograms: "15.0", "+Inf".
    return floatToGoString(bound)


registry = CollectorRegistry(auto_describe=False)
registry.register(DispatcherCollector())


def _authorized(request: HttpRequest) -> bool | None:
    """True: let in. False: credentials given but wrong (403). None: none given (401)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        token = metrics_token()
        return bool(token) and hmac.compare_digest(header[7:].strip().encode(), token.encode())
    if user is not None and user.is_authenticated:
        return False
    return None


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition, for staff sessions and bearer-token scrapers."""
    allowed = _authorized(request)
    if not allowed:
        response = HttpResponse(
            "forbidden\n" if allowed is False else "authentication required\n",
            status=403 if allowed is False else 401,
            content_type="text/plain; charset=utf-8",
        )
        if allowed is None:
            response["WWW-Authenticate"] = 'Bearer realm="dispatcher metrics"'
        return response
    # The format the scraper asks for: OpenMetrics for Prometheus (it asks for it
    # first), the classic text format (0.0.4) for curl and browsers.
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    response = HttpResponse(encoder(registry), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def outcome_metrics(counts: dict[str, dict[str, int]] | None = None) -> Iterator[Metric]:
    """Receipts, skips, digests, fallbacks and suppressions (dispatcher.dashboard.outcomes)."""
    found = outcomes.outcomes(counts)
    receipts = GaugeMetricFamily("dispatcher_receipts", "Delivery receipts recorded, by messenger and event.",
                                 labels=["messenger", "event"])
    every = GaugeMetricFamily(
        "dispatcher_outcomes",
        "Outcomes beyond sent and failed: delivered, bounced, complained, skipped, digested, fell_back.",
        labels=["messenger", "outcome"])
    for alias, row in sorted(found.by_messenger.items()):
        for outcome in outcomes.OUTCOMES:
            every.add_metric([alias, outcome], row.get(outcome, 0))
            if outcome in ("delivered", "bounced", "complained"):
                receipts.add_metric([alias, outcome], row.get(outcome, 0))
    yield receipts
    yield every
    yield GaugeMetricFamily("dispatcher_digest_items_waiting",
                            "Notifications waiting in digest windows not closed yet.",
                            value=found.digests_waiting)
    suppressed = GaugeMetricFamily("dispatcher_suppressed_addresses",
                                   "Addresses on the suppression list, by messenger kind.", labels=["kind"])
    for kind, n in sorted(found.suppressed.items()):
        suppressed.add_metric([kind], n)
    yield suppressed
