"""Remove private messages that both sides deleted more than --days ago."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dispatcher.inbox.cleanup import cleanup

DEFAULT_DAYS = 30


class Command(BaseCommand):
    help = (
        "Delete private messages deleted by both sender and recipient (a visitor's side counts "
        "as deleted) more than --days ago; a conversation goes only when all its messages do. "
        "Exits non-zero on error."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--days", type=int,
            default=getattr(settings, "DISPATCHER_INBOX_CLEANUP_DAYS", DEFAULT_DAYS),
            help="minimum age, in days, of the later of the two deletions (default %(default)s)",
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days < 0:
            raise CommandError("--days must be 0 or more")
        try:
            count = cleanup(days, dry_run=options["dry_run"])
        except Exception as exc:
            raise CommandError(f"inbox_cleanup failed: {exc}") from exc
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {count} private messages")
