"""A real HTTP(S) server on loopback, run in a thread, that records every request.

Each provider fake is an ``app``: a callable taking a :class:`Received`
request and returning a :class:`Reply`. Tests assert on ``server.received``.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    url: str = ""
    at: float = field(default_factory=time.monotonic)  # when it arrived
    client_port: int = 0  # tells connections apart (keep-alive reuse)

    @property
    def form(self) -> dict[str, str]:
        if "application/x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return {}
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def params(self) -> dict[str, Any]:
        """Query, form and JSON object parameters together (as Telegram reads them)."""
        data: dict[str, Any] = {**self.query, **self.form}
        if "application/json" in self.headers.get("content-type", "") and isinstance(self.json, dict):
            data.update(self.json)
        return data


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (read timeouts)


App = Callable[[Received], Reply]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs: every reply has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        received = Received(
            method=self.command,
            path=parts.path,
            query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            url=self.path,
            client_port=self.client_address[1],
        )
        self.server.owner.received.append(received)
        try:
            reply = self.server.owner.app(received)
        except Exception as exc:  # a bug in a fake shows up as a 500 with its text
            reply = Reply(500, {"fake_error": repr(exc)})
        if reply.delay:
            self.server.owner.stopping.wait(reply.delay)
        payload = reply.body
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            reply.headers.setdefault("Content-Type", "application/json")
        elif isinstance(payload, str):
            payload = payload.encode()
        payload = payload or b""
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeServer


class FakeServer:
    """``FakeServer(app)``, or ``FakeServer(app, tls=ssl_context)`` for HTTPS."""

    def __init__(self, app: App, tls: ssl.SSLContext | None = None):
        self.app = app
        self.received: list[Received] = []
        self.stopping = threading.Event()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
