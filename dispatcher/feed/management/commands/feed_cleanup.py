"""``manage.py feed_cleanup [--days N] [--read-days N] [--dry-run]``: the feed's sweep, by hand or cron."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dispatcher.feed import sweeps


class Command(BaseCommand):
    help = "Delete old in-app notifications: read ones after --read-days, any after --days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=None,
                            help="delete any notification older than this (DISPATCHER_FEED_KEEP_DAYS, 90)")
        parser.add_argument("--read-days", type=float, default=None,
                            help="delete read ones read longer ago (DISPATCHER_FEED_KEEP_READ_DAYS, 30)")
        parser.add_argument("--dry-run", action="store_true", help="only count them")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("days", "read_days"):
            if options[name] is not None and options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must not be negative")
        try:
            count = sweeps.cleanup(options["days"], options["read_days"], dry_run=options["dry_run"])
        except Exception as exc:
            raise CommandError(f"feed cleanup failed: {exc}") from exc
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {count} notifications")
