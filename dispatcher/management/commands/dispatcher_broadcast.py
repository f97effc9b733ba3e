"""``manage.py dispatcher_broadcast``: one message to every recipient of a CSV file.

::

    manage.py dispatcher_broadcast people.csv --text "Maintenance tonight at 22:00"
    manage.py dispatcher_broadcast people.csv --message-type email_plain \\
        --context '{"subject": "Maintenance", "text": "Tonight at 22:00"}' --key maint-2025-06

The CSV has a header row with an ``address`` column and, optionally, a
``messenger`` column (otherwise ``--messenger``, default ``smtp``). Every row
is validated first; nothing is written when a row is bad (unless
``--skip-invalid``). Recipients are then scheduled in batches of
``--batch-size``, one ``schedule_messages`` call (one transaction) per batch,
with ``idempotency_key=f"{key}:{batch_number}"``. A rerun with the same key
skips the batches already scheduled, so a broadcast that crashed (or was
interrupted) resumes where it stopped and nobody gets the message twice.
Without ``--key``, the key is derived from the file's content and the
message, so rerunning the same command resumes too.

A progress bar goes to stderr; the summary to stdout. Exits non-zero when
anything fails.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db.models import Count

from dispatcher.api import Recipient, recipients, schedule_messages
from dispatcher.messages import EmailTextMessage, MessageBase, PlainTextMessage
from dispatcher.models import Message
from dispatcher.registry import get_registered_message_type, get_registered_messenger_object

#: Message.idempotency_key holds 200 characters; ":<batch number>" follows the key.
KEY_MAX = 180
MAX_REPORTED_INVALID = 10


def _plain(text: str) -> str:
    return text


class Progress:
    """A small progress bar on a stream: redrawn in place on a terminal, else a line per 10%."""

    def __init__(self, total: int, stream: OutputWrapper, enabled: bool = True, width: int = 30):
        self.total = max(total, 0)
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self.tty = enabled and stream.isatty()
        self.started = time.monotonic()
        self.last_step = -1
        self.last_draw = 0.0

    def update(self, done: int, batch: int, batches: int, skipped: int) -> None:
        if not self.enabled:
            return
        fraction = done / self.total if self.total else 1.0
        percent = int(fraction * 100)
        if not self.tty:
            step = percent // 10
            if step == self.last_step:
                return
            self.last_step = step
        elif done < self.total and time.monotonic() - self.last_draw < 0.1:
            return  # at most ten redraws a second on a terminal
        self.last_draw = time.monotonic()
        filled = int(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        text = (f"[{bar}] {percent:3d}% {done}/{self.total} recipients, batch {batch}/{batches}"
                f", {skipped} skipped, {done / elapsed:.0f}/s")
        # Unstyled: Django paints a terminal's stderr red by default.
        self.stream.write(("\r" + text) if self.tty else text, style_func=_plain,
                          ending="" if self.tty else "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("", style_func=_plain)
            self.stream.flush()


class Command(BaseCommand):
    help = "Schedule one message to the recipients of a CSV file, in resumable batches, with progress."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("csv_file", help="CSV with a header row and an address column")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--text", help="a plain-text message")
        what.add_argument("--message-type", help="alias of a registered message type")
        parser.add_argument("--subject", help="with --text: send an e-mail (email_plain) with this subject")
        parser.add_argument("--context", default="{}",
                            help="with --message-type: the message's context, as a JSON object")
        parser.add_argument("--messenger", default="smtp",
                            help="messenger for rows without a messenger column value (default: smtp)")
        parser.add_argument("--address-column", default="address")
        parser.add_argument("--messenger-column", default="messenger",
                            help="optional column naming each row's messenger (default: messenger)")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--key", help="resume key (default: derived from the file and the message)")
        parser.add_argument("--priority", type=int)
        parser.add_argument("--skip-invalid", action="store_true",
                            help="schedule the valid rows and report the invalid ones")
        parser.add_argument("--dry-run", action="store_true", help="validate and count, write nothing")
        parser.add_argument("--no-progress", action="store_true")

    # -- inputs --------------------------------------------------------------------
    def _message(self, options: dict[str, Any]) -> MessageBase:
        if options["text"] is not None:
            if options["subject"]:
                return EmailTextMessage(options["subject"], options["text"])
            return PlainTextMessage(options["text"])
        try:
            message_cls = get_registered_message_type(options["message_type"])
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        try:
            context = json.loads(options["context"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--context is not valid JSON: {exc}") from exc
        if not isinstance(context, dict):
            raise CommandError("--context must be a JSON object")
        # The stored form of a message is its context: build the instance from
        # it, whatever the type's own constructor takes.
        message = message_cls.__new__(message_cls)
        MessageBase.__init__(message, context)
        return message

    def _rows(self, path: Path, options: dict[str, Any]) -> Iterator[tuple[int, str, str]]:
        """(line number, messenger, address) for each data row."""
        address_col, messenger_col = options["address_column"], options["messenger_column"]
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if address_col not in columns:
                raise CommandError(
                    f"{path}: no {address_col!r} column (columns: {', '.join(columns) or 'none'})"
                )
            for row in reader:
                address = (row.get(address_col) or "").strip()
                messenger = (row.get(messenger_col) or "").strip() or options["messenger"]
                if not address and not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # a blank line
                yield reader.line_num, messenger, address

    def _recipient(self, message: MessageBase, messenger: str, address: str) -> Recipient:
        if not address:
            raise ValueError("empty address")
        [recipient] = recipients(messenger, address)
        if not message.supports(get_registered_messenger_object(messenger)):
            raise ValueError(f"message type {message.alias!r} cannot be sent through {messenger!r}")
        return recipient

    def _batches(self, path: Path, message: MessageBase, options: dict[str, Any],
                 size: int) -> Iterator[list[Recipient]]:
        """The valid recipients, in batches of ``size`` (the same batches on every run)."""
        batch: list[Recipient] = []
        for _, messenger, address in self._rows(path, options):
            try:
                batch.append(self._recipient(message, messenger, address))
            except (LookupError, ValueError):
                continue  # reported by the validation pass
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _derived_key(self, path: Path, message: MessageBase, options: dict[str, Any]) -> str:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        spec = [message.alias, message.context, options["messenger"], options["address_column"],
                options["messenger_column"], options["batch_size"], options["priority"]]
        digest.update(json.dumps(spec, sort_keys=True, default=str).encode())
        return f"broadcast:{digest.hexdigest()[:24]}"

    # -- the run -------------------------------------------------------------------
    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["csv_file"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        message = self._message(options)
        key = options["key"] or self._derived_key(path, message, options)
        if len(key) > KEY_MAX:
            raise CommandError(f"--key is longer than {KEY_MAX} characters")

        # Pass 1: validate every row before anything is written.
        total, invalid = 0, []
        for line, messenger, address in self._rows(path, options):
            try:
                self._recipient(message, messenger, address)
            except (LookupError, ValueError) as exc:
                invalid.append(f"line {line}: {address!r} via {messenger!r}: {exc}")
            else:
                total += 1
        if invalid:
            listing = "\n  ".join(invalid[:MAX_REPORTED_INVALID])
            more = ""
            if len(invalid) > MAX_REPORTED_INVALID:
                more = f"\n  ... and {len(invalid) - MAX_REPORTED_INVALID} more"
            if not options["skip_invalid"]:
                raise CommandError(
                    f"{len(invalid)} invalid rows, nothing scheduled (use --skip-invalid to "
                    f"send to the {total} valid ones):\n  {listing}{more}"
                )
            self.stderr.write(f"skipping {len(invalid)} invalid rows:\n  {listing}{more}",
                              style_func=self.style.WARNING)
        if not total:
            raise CommandError(f"{path}: no valid recipient")
        batches = -(-total // batch_size)
        if options["dry_run"]:
            self.stdout.write(f"dry run: {total} recipients in {batches} batches; key {key}")
            return

        done_batches = self._done_batches(key, total, batch_size)
        progress = Progress(total, self.stderr, enabled=not options["no_progress"])
        scheduled = skipped = done = number = 0
        try:
            for chunk in self._batches(path, message, options, batch_size):
                number += 1
                if number in done_batches:
                    skipped += 1
                else:
                    self._send(message, chunk, key, number, options["priority"])
                    scheduled += len(chunk)
                done += len(chunk)
                progress.update(done, number, batches, skipped)
        except Exception as exc:
            progress.close()
            raise CommandError(
                f"batch {number} failed: {type(exc).__name__}: {exc}\n"
                f"{number - 1} of {batches} batches are scheduled; run the same command again "
                f"(--key {key}) to resume"
            ) from exc
        progress.close()
        if number != batches:
            raise CommandError(f"{path} changed while it was read ({number} batches, expected {batches})")
        self.stdout.write(
            f"scheduled {scheduled} dispatches in {batches - skipped} batches"
            f" ({skipped} batches were already scheduled); key {key}"
        )

    def _done_batches(self, key: str, total: int, batch_size: int) -> set[int]:
        """Batches a previous run with ``key`` scheduled; refuse if they do not fit this run."""
        done: dict[int, int] = {}
        rows = (
            Message.objects.filter(idempotency_key__startswith=f"{key}:")
            .annotate(n=Count("dispatches"))
            .values_list("idempotency_key", "n")
        )
        for idem, n in rows:
            suffix = idem[len(key) + 1:]
            if suffix.isdigit():
                done[int(suffix)] = n
        for number, n in done.items():
            expected = min(batch_size, total - (number - 1) * batch_size)
            if n != expected:
                raise CommandError(
                    f"key {key!r} was used for a different broadcast (batch {number} has {n} "
                    f"dispatches, this run expects {max(expected, 0)}): use the same file and "
                    f"--batch-size to resume, or another --key"
                )
        if done:
            self.stderr.write(f"resuming {key}: {len(done)} batches already scheduled",
                              style_func=self.style.WARNING)
        return set(done)

    def _send(self, message: MessageBase, batch: list[Recipient], key: str, number: int,
              priority: int | None) -> None:
        """Schedule one batch in one transaction, under its own idempotency key."""
        fresh = type(message).__new__(type(message))
        MessageBase.__init__(fresh, dict(message.context))
        schedule_messages(fresh, batch, priority=priority, idempotency_key=f"{key}:{number}")

