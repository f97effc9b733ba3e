"""Maintain the monthly partitions of the dispatch history (PostgreSQL)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from dispatcher import partitions
from dispatcher.sweeps import maintain_partitions


class Command(BaseCommand):
    help = (
        "Create the coming months' partitions, start the current month's ids, and drop the months "
        "whose whole range is older than --days (default DISPATCHER_CLEANUP_DAYS) and that hold no "
        "unfinished dispatch (those are kept and reported). Exits 1 when a step failed. "
        "--list shows the partitions. Nothing to do on SQLite."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=settings.DISPATCHER_CLEANUP_DAYS)
        parser.add_argument("--list", action="store_true", help="list the partitions, do nothing else")

    def handle(self, *args: Any, **options: Any) -> None:
        if not partitions.is_partitioned():
            self.stdout.write(f"the dispatch tables are not partitioned ({connection.vendor}): nothing to do")
            return
        if options["list"]:
            self.list()
            return
        try:
            report = maintain_partitions(days=options["days"])
        except Exception as exc:
            raise CommandError(f"dispatcher_partitions failed: {exc}") from exc
        self.stdout.write(f"created {len(report.created)}: {' '.join(report.created) or '-'}; "
                          f"dropped {len(report.dropped)}: {' '.join(report.dropped) or '-'}")
        if report.jumped_to is not None:
            self.stdout.write(f"dispatch ids continue at {report.jumped_to}")
        for name, count in report.held.items():
            self.stderr.write(f"kept {name}: past retention, but {count} dispatches in it are unfinished")

    def list(self) -> None:
        with connection.cursor() as cursor:
            for part in partitions.list_partitions(cursor):
                cursor.execute("SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
                               "WHERE oid = to_regclass(%s)", [part.name])
                rows, size = cursor.fetchone()
                lo = "MINVALUE" if part.lo is None else part.lo
                hi = "MAXVALUE" if part.hi is None else part.hi
                bounds = "DEFAULT" if part.default else f"[{lo}, {hi})"
                self.stdout.write(f"{part.name}\t{bounds}\t~{max(rows, 0)} rows\t{size // 1024} kB")
