"""``manage.py dispatcher_status``: counts by messenger and status, backlog, oldest due pending.

The same bounded aggregate queries as the dashboard. Exits non-zero when the
database cannot be read; an unreachable broker is reported (its column shows
``?``), not treated as a failure of the command, unless ``--require-broker``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dispatcher.dashboard import outcomes, stats
from dispatcher.dashboard.broker import BrokerDepths, queue_depths
from dispatcher.dashboard.workers import unserved


class Command(BaseCommand):
    help = "Print dispatch counts by messenger and status, the backlog and the oldest due pending age."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=("table", "json"), default="table")
        parser.add_argument("--no-broker", action="store_true", help="do not ask the broker for queue depths")
        parser.add_argument("--require-broker", action="store_true",
                            help="exit non-zero when the broker cannot be reached")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        try:
            counts = stats.counts_by_messenger_status()
            due, oldest = stats.backlog(now, counts)
            beyond = outcomes.outcomes(counts)
        except Exception as exc:
            raise CommandError(f"could not read dispatch counts: {type(exc).__name__}: {exc}") from exc
        messengers = stats.known_messengers(counts)
        broker = None if options["no_broker"] else queue_depths(stats.known_messengers())
        # Due dispatches of a messenger that no running worker consumes wait for ever.
        not_served, workers = unserved(due) if broker and broker.ok else ([], None)
        flow = {row.messenger: row for row in stats.flow(stats.known_messengers())}

        if options["format"] == "json":
            self.stdout.write(json.dumps({
                "at": now.isoformat(),
                "messengers": {
                    alias: {
                        "counts": {s: counts.get(alias, {}).get(s, 0) for s in stats.STATUSES},
                        "due": due.get(alias, 0),
                        "broker_queue": broker.depths.get(alias) if broker and broker.ok else None,
                        "flow": _flow_json(flow.get(alias)),
                    }
                    for alias in messengers
                },
                "oldest_due_pending_seconds": oldest.total_seconds() if oldest is not None else None,
                "broker_error": broker.error if broker else None,
                "unserved": {item.messenger: {"queue": item.queue, "due": item.due} for item in not_served},
                "workers": None if workers is None else workers.workers,
                "outcomes": beyond.as_dict(),
            }, indent=2))
        else:
            self._table(messengers, counts, due, broker)
            self._flow(list(flow.values()))
            self.stdout.write(f"oldest due pending: {stats.format_age(oldest)}")
            self._outcomes(beyond)
        for item in not_served:
            self.stderr.write(f"warning: {item}")
        if workers is not None and workers.error:
            self.stderr.write(f"could not ask the workers which queues they consume: {workers.error}")
        if broker and not broker.ok:
            self.stderr.write(f"broker queue depths unavailable: {broker.error}")
            if options["require_broker"]:
                raise CommandError("the broker could not be reached")

    def _flow(self, rows: list[stats.FlowRow]) -> None:
        shown = [row for row in rows if row.configured or row.summary != "ok"]
        if not shown:
            self.stdout.write("flow control: no rate limit, concurrency or circuit breaker configured")
            return
        self.stdout.write("flow control:")
        for row in shown:
            c = row.config
            limits = [f"rate {c.rate} (burst {c.burst})" if c.rate else "no rate"]
            if c.recipient_rate:
                limits.append(f"per recipient {c.recipient_rate}")
            if c.daily_quota:
                used = row.state.daily_used if row.state else "?"
                limits.append(f"today {used}/{c.daily_quota}")
            if c.concurrency > 1:
                limits.append(f"concurrency {c.concurrency}")
            if c.circuit_failures:
                circuit = row.state.circuit if row.state else "?"
                limits.append(f"circuit {circuit} ({c.circuit_failures} failures, {c.circuit_cooldown:g}s)")
            self.stdout.write(f"  {row.messenger}: {', '.join(limits)}: {row.summary}")

    def _table(self, messengers: list[str], counts: dict[str, dict[str, int]], due: dict[str, int],
               broker: BrokerDepths | None) -> None:
        header = ["messenger", *stats.STATUSES, "total", "due", "broker"]
        body = []
        for alias in messengers:
            by_status = counts.get(alias, {})
            depth = "-" if broker is None else ("?" if not broker.ok else broker.depths.get(alias, 0))
            body.append([alias, *(by_status.get(s, 0) for s in stats.STATUSES),
                         sum(by_status.values()), due.get(alias, 0), depth])
        totals = [sum(counts.get(a, {}).get(s, 0) for a in messengers) for s in stats.STATUSES]
        body.append(["all", *totals, sum(totals), sum(due.values()), ""])
        rows = [header] + [[str(c) for c in row] for row in body]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

        def line(row: list[str]) -> str:
            cells = [c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            return "  ".join(cells)

        self.stdout.write(line(rows[0]))
        self.stdout.write("  ".join("-" * w for w in widths))
        for row in rows[1:-1]:
            self.stdout.write(line(row))
        self.stdout.write("  ".join("-" * w for w in widths))
        self.stdout.write(line(rows[-1]))

    def _outcomes(self, found: outcomes.Outcomes) -> None:
        """Receipts, skips, digests, fallbacks, suppressions: one line each."""
        totals = found.totals
        self.stdout.write("receipts: " + ", ".join(f"{o} {totals[o]}" for o in ("delivered", "bounced",
                                                                                 "complained")))
        self.stdout.write(f"skipped (throttled): {totals['skipped']}; fell back: {totals['fell_back']}")
        self.stdout.write(f"digested: {totals['digested']} ({found.digests_waiting} waiting in open windows)")
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(found.suppressed.items())) or "none"
        self.stdout.write(f"suppressed addresses: {kinds}")


def _flow_json(row: stats.FlowRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    state = row.state
    paused = state.paused_until_datetime() if state else None
    opened = state.circuit_open_until_datetime() if state else None
    return {
        **row.config.as_dict(),
        "state": row.summary,
        "limited": state.limited if state else None,
        "paused_until": paused.isoformat() if paused else None,
        "circuit": state.circuit if state else None,
        "circuit_open_until": opened.isoformat() if opened else None,
        "consecutive_failures": state.consecutive_failures if state else None,
        "daily_used": state.daily_used if state else None,
    }
