"""A local SMTP server that keeps what it receives (development and tests)."""

from __future__ import annotations

import email
import itertools
import threading
import time
from email.message import Message as EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


class SinkHandler:
    """Keeps received mail in memory and, with ``directory``, as ``.eml`` files."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        #: time.time() of each message's arrival, for latency measurements
        self.received_at: list[float] = []
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        if directory:
            directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        arrived = time.time()
        message = email.message_from_bytes(raw, policy=default_policy)
        with self.lock:
            self.received_at.append(arrived)
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
            n = next(self.counter)
        if self.directory:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{n:06d}.eml"
            (self.directory / name).write_bytes(raw)
        return "250 Message accepted for delivery"


def start_sink(host: str = "127.0.0.1", port: int = 1025, directory: Path | None = None,
               handler: Any = None) -> tuple[Controller, Any]:
    handler = handler or SinkHandler(directory)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    return controller, handler
