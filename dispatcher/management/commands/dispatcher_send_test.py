"""``manage.py dispatcher_send_test <alias> <to> [--text TEXT]``: is this messenger configured right?

Sends one message now, through the messenger's own code but without the
queue or the database, and says what happened. Exits 0 when the transport
accepted the message, 1 (CommandError) with the transport's reason when not.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dispatcher.api import get_registered_messenger_objects, send_test_message
from dispatcher.exceptions import UnknownMessenger
from messengers.exceptions import MessengerError
from messengers.redact import redact

DEFAULT_TEXT = "This is a test message from the dispatcher."


class Command(BaseCommand):
    help = "Send a test message through a messenger now (no queue, no database) and print the outcome."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("alias", help="messenger alias, e.g. smtp")
        parser.add_argument("to", help="address to send to, e.g. you@example.org")
        parser.add_argument("--text", default=DEFAULT_TEXT, help="message text (default: %(default)r)")

    def handle(self, *args: Any, **options: Any) -> None:
        alias, to, text = options["alias"], options["to"], options["text"]
        try:
            send_test_message(alias, to, text)
        except UnknownMessenger as exc:
            known = ", ".join(sorted(get_registered_messenger_objects())) or "none"
            raise CommandError(f"unknown messenger {alias!r} (configured: {known})") from exc
        except Exception as exc:
            # The transport's error, with any secret it carries masked.
            reason = redact(f"{type(exc).__name__}: {exc}")
            kind = ""
            if isinstance(exc, MessengerError):
                kind = " (permanent error)" if exc.permanent else " (temporary error: may work later)"
            raise CommandError(f"FAILED: {alias} -> {to}: {reason}{kind}") from exc
        self.stdout.write(self.style.SUCCESS(f"SENT: {alias} -> {to}"))
