"""``manage.py dispatcher_send_scheduled``: deliver due dispatches in this process (cron)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dispatcher.exceptions import DispatcherError
from dispatcher.scheduled import send_scheduled_messages


class Command(BaseCommand):
    help = ("Deliver the due dispatches now, without Celery (for cron). Safe to run "
            "twice at once, or beside workers: each dispatch is claimed once.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--priority", type=int, default=None, help="only messages of this priority")
        parser.add_argument("--ignore-unknown-messengers", action="store_true",
                            help="leave dispatches through unknown messengers alone instead of failing")
        parser.add_argument("--ignore-unknown-message-types", action="store_true",
                            help="leave dispatches of unknown message types alone instead of failing")
        parser.add_argument("--limit", type=int, default=None, help="at most this many dispatches")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = send_scheduled_messages(
                priority=options["priority"],
                ignore_unknown_messengers=options["ignore_unknown_messengers"],
                ignore_unknown_message_types=options["ignore_unknown_message_types"],
                limit=options["limit"],
            )
        except DispatcherError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"sent {result.sent}, to retry {result.error}, failed {result.failed}")
