"""Record SMTP bounces (DSNs): from a Maildir, or one mail piped in.

    manage.py dispatcher_bounces                      # DISPATCHER_BOUNCE_MAILBOX
    manage.py dispatcher_bounces --maildir /var/mail/bounces
    manage.py dispatcher_bounces - --recipient "$RECIPIENT" < mail   # an MTA's pipe
"""

from __future__ import annotations

import mailbox
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dispatcher.receipts import dsn


class Command(BaseCommand):
    help = "Record the bounces (DSNs) in the bounce Maildir, or in one mail read from stdin ('-')."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("source", nargs="?", help="'-' to read one mail from stdin")
        parser.add_argument("--maildir", help="a Maildir (default: DISPATCHER_BOUNCE_MAILBOX)")
        parser.add_argument("--recipient",
                            help="the envelope recipient of the piped mail (the bounce address)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["source"] == "-":
            recorded = dsn.process_message(sys.stdin.buffer.read(), options["recipient"])
            self.stdout.write("recorded 1 receipt" if recorded else "recorded nothing")
            return
        if options["source"]:
            raise CommandError("give '-' to read a mail from stdin, or --maildir")
        maildir = options["maildir"] or settings.DISPATCHER_BOUNCE_MAILBOX
        if not maildir:
            raise CommandError("no Maildir: give --maildir or set DISPATCHER_BOUNCE_MAILBOX")
        try:
            count = dsn.process_mailbox(maildir)
        except (OSError, mailbox.Error) as exc:
            raise CommandError(f"cannot read the Maildir {maildir}: {exc}") from exc
        self.stdout.write(f"recorded {count} receipts")
