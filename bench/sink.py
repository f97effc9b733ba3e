"""The benchmark's SMTP sink, in a process of its own (as a real server is).

It appends ``<arrival time> <recipient>`` to a file per message, so the
bench reads arrival times without sharing a process (or a GIL) with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class Handler:
    def __init__(self, path: Path, pipelining: bool = False):
        self.out = open(path, "a", buffering=1)  # noqa: SIM115  (line-buffered for the reader)
        self.pipelining = pipelining

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        """Offer PIPELINING (RFC 2920) like Postfix, Exim or SES do, when asked
        to: aiosmtpd reads commands in order from its buffer, so it takes
        pipelined ones, but does not say so by itself."""
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.out.write(f"{time.time()} {envelope.rcpt_tos[0]}\n")
        return "250 Message accepted for delivery"


class SinkProcess:
    """Start ``python -m bench.sink PORT FILE`` and read what it received."""

    def __init__(self, port: int, path: Path, pipelining: bool = False):
        self.port, self.path = port, path
        path.write_text("")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sink", str(port), str(path)]
                                     + (["pipelining"] if pipelining else []))
        from tests.services import wait_for

        wait_for(self._listening, 20, 0.1, "the sink to listen")

    def _listening(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def arrivals(self) -> list[float]:
        return [float(line.split()[0]) for line in self.path.read_text().splitlines() if line]

    def count(self) -> int:
        return self.path.read_text().count("\n")

    def reset(self) -> None:
        self.path.write_text("")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    from aiosmtpd.controller import Controller

    port, path = int(sys.argv[1]), Path(sys.argv[2])
    controller = Controller(Handler(path, "pipelining" in sys.argv[3:]), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
