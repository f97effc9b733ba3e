"""The benchmarks' HTTP provider, in a process of its own (as a real one is).

``python -m bench.receiver PORT FILE [--delay S] [--limited N] [--retry-after S]``:
answers every POST with 200 after ``delay`` seconds (a provider's latency),
the first ``limited`` ones with 429 and ``Retry-After``; appends
``<arrival time> <status>`` to FILE per request, so the bench reads arrival
times without sharing a process (or a GIL) with it. HTTP/1.1 keep-alive, a
thread per connection.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY the body waits for
    # the client's delayed ACK (40 ms), which real servers (nginx) do not do.
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            limited = self.server.limited > 0
            if limited:
                self.server.limited -= 1
            self.server.out.write(f"{arrived} {429 if limited else 200}\n")
        if self.server.delay and not limited:
            time.sleep(self.server.delay)
        body = b"slow down" if limited else b"ok"
        self.send_response(429 if limited else 200)
        if limited:
            self.send_header("Retry-After", str(self.server.retry_after))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    delay = 0.0
    limited = 0
    retry_after = 2
    lock = threading.Lock()
    out: Any = None


class ReceiverProcess:
    """Start the receiver and read what it received."""

    def __init__(self, port: int, path: Path, delay: float = 0.0, limited: int = 0, retry_after: int = 2):
        self.port, self.path = port, path
        self.url = f"http://127.0.0.1:{port}"
        path.write_text("")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.receiver", str(port), str(path),
                                      "--delay", str(delay), "--limited", str(limited),
                                      "--retry-after", str(retry_after)])
        from tests.services import wait_for

        wait_for(self._listening, 20, 0.1, "the receiver to listen")

    def _listening(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def log(self) -> list[tuple[float, int]]:
        rows = []
        for line in self.path.read_text().splitlines():
            if line:
                at, status = line.split()
                rows.append((float(at), int(status)))
        return rows

    def count(self) -> int:
        return self.path.read_text().count("\n")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("file")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--limited", type=int, default=0)
    parser.add_argument("--retry-after", type=int, default=2)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.delay, server.limited, server.retry_after = args.delay, args.limited, args.retry_after
    server.out = open(args.file, "a", buffering=1)  # noqa: SIM115
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
