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
            due = stats.due_by_messenger(now)
            oldest = stats.oldest_due_pending(now)
            beyond = outcomes.outcomes()
        except Exception as exc:
            raise CommandError(f"could not read dispatch counts: {type(exc).__name__}: {exc}") from exc
        messengers = stats.known_messengers(counts)
        broker = None if options["no_broker"] else queue_depths(stats.known_messengers())
        # Due dispatches of a messenger that no running worker consumes wait for ever.
        not_served, workers = unserved(due) if broker and broker.ok else ([], None)

        if options["format"] == "json":
            self.stdout.write(json.dumps({
                "at": now.isoformat(),
                "messengers": {
                    alias: {
                        "counts": {s: counts.get(alias, {}).get(s, 0) for s in stats.STATUSES},
                        "due": due.get(alias, 0),
                        "broker_queue": broker.depths.get(alias) if broker and broker.ok else None,
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
