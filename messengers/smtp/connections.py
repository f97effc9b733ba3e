"""SMTP connections a worker process keeps between batches."""

from __future__ import annotations

import os
import smtplib
import threading
import time
from collections.abc import Hashable

ConnectionKey = tuple[Hashable, ...]


def close(connection: smtplib.SMTP) -> None:
    """QUIT if the server still listens (it also ends an open transaction), else just close."""
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


class IdleConnections:
    """Opening a connection (TCP, greeting, EHLO, STARTTLS, AUTH) costs several
    round trips; a worker that sends batch after batch to one server reuses it.

    A connection is only given back clean (between transactions), and is
    checked with RSET when taken: a server that does not answer 250 to it, or
    a connection idle for longer than ``keepalive``, is closed instead, so a
    batch never starts on a connection left mid-transaction. A forked child
    forgets (without closing) the connections of its parent, whose sockets are
    not its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[ConnectionKey, list[tuple[smtplib.SMTP, float]]] = {}

    def take(self, key: ConnectionKey, keepalive: float) -> smtplib.SMTP | None:
        while True:
            with self._lock:
                stack = self._idle.get(key)
                if not stack:
                    return None
                connection, since = stack.pop()
            if time.monotonic() - since <= keepalive:
                try:
                    if connection.rset()[0] == 250:
                        return connection
                except (smtplib.SMTPException, OSError):
                    pass
            close(connection)

    def give(self, key: ConnectionKey, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append((connection, time.monotonic()))

    def forget(self) -> None:
        self._idle = {}
        self._lock = threading.Lock()


IDLE = IdleConnections()
os.register_at_fork(after_in_child=IDLE.forget)
