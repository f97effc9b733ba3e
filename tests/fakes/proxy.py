"""The test suite's one proxy, run as its own process: HTTP and SOCKS5 on one port.

``python -m tests.fakes.proxy --port 8899 --log seen.jsonl [--user U --password P]
[--cut-on BYTES --cut-at N]``; ``tests.fakes.processes.ProxyProcess`` starts it.

- HTTP: absolute-URI requests (``GET http://host/path``) are forwarded, and
  ``CONNECT host:port`` opens a tunnel (for HTTPS targets); with credentials,
  ``Proxy-Authorization: Basic`` is required (407 otherwise).
- SOCKS5 (RFC 1928), told apart by its first byte: CONNECT only, with
  username/password authentication (RFC 1929) when credentials are set.

Each request it handles is appended to the log as one JSON line
(``{"kind": "http"|"connect"|"socks5", "target": "host:port", "user": ..., "ok": ...}``),
so a test can prove its request went through the proxy.

``--cut-on B --cut-at N``: the N-th time a client sends the bytes B through a
tunnel, the proxy drops them and closes both sides, so a test can lose a
connection mid-stream at a chosen point (an XMPP ack request, say).
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any


class Proxy:
    def __init__(self, port: int, log_path: str, user: str | None, password: str | None,
                 cut_on: bytes | None = None, cut_at: int = 1):
        self.port, self.log_path, self.user, self.password = port, log_path, user, password
        self.cut_on, self.cut_at, self.cuts_seen = cut_on, cut_at, 0
        self.lock = threading.Lock()

    def watcher(self) -> Callable[[bytes], bool] | None:
        """For one tunnel: told each chunk a client sends, says when to cut."""
        needle = self.cut_on
        if not needle:
            return None
        tail = b""

        def cut(chunk: bytes) -> bool:
            nonlocal tail
            window = tail + chunk  # a match split across two chunks counts once
            tail = window[-len(needle) + 1:]
            with self.lock:
                self.cuts_seen += window.count(needle)
                return self.cuts_seen >= self.cut_at

        return cut

    def log(self, **entry: Any) -> None:
        with self.lock, open(self.log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")

    def serve(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        print("ready", flush=True)
        while True:
            client, _ = listener.accept()
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def handle(self, client: socket.socket) -> None:
        try:
            first = client.recv(1, socket.MSG_PEEK)
            if first == b"\x05":
                self.socks5(client)
            elif first:
                self.http(client)
        except OSError:
            pass
        finally:
            client.close()

    # -- SOCKS5 ---------------------------------------------------------------------
    def socks5(self, client: socket.socket) -> None:
        _, count = recv_exact(client, 2)
        methods = recv_exact(client, count)
        user = None
        if self.user is not None:
            if 2 not in methods:
                client.sendall(b"\x05\xff")
                return
            client.sendall(b"\x05\x02")
            _, ulen = recv_exact(client, 2)
            user = recv_exact(client, ulen).decode()
            (plen,) = recv_exact(client, 1)
            password = recv_exact(client, plen).decode()
            if (user, password) != (self.user, self.password):
                self.log(kind="socks5", target=None, user=user, ok=False)
                client.sendall(b"\x01\x01")
                return
            client.sendall(b"\x01\x00")
        else:
            client.sendall(b"\x05\x00")
        _, command, _, atyp = recv_exact(client, 4)
        if atyp == 1:
            host = socket.inet_ntoa(recv_exact(client, 4))
        elif atyp == 3:
            (length,) = recv_exact(client, 1)
            host = recv_exact(client, length).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, recv_exact(client, 16))
        (port,) = struct.unpack("!H", recv_exact(client, 2))
        target = f"{host}:{port}"
        if command != 1:
            client.sendall(b"\x05\x07\x00\x01" + bytes(6))
            return
        try:
            upstream = socket.create_connection((host, port), timeout=5)
        except OSError:
            self.log(kind="socks5", target=target, user=user, ok=False)
            client.sendall(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            return
        self.log(kind="socks5", target=target, user=user, ok=True)
        client.sendall(b"\x05\x00\x00\x01" + bytes(6))
        relay(client, upstream, self.watcher())

    # -- HTTP -----------------------------------------------------------------------
    def http(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, uri, version = lines[0].split(" ", 2)
        headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
        user = self.authorize(dict((k.strip().lower(), v.strip()) for k, v in headers))
        if user is False:
            self.log(kind="connect" if method == "CONNECT" else "http", target=uri, user=None, ok=False)
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                           b"Proxy-Authenticate: Basic realm=\"fake\"\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
            return
        if method == "CONNECT":
            host, _, port = uri.rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                self.log(kind="connect", target=uri, user=user, ok=False)
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            self.log(kind="connect", target=uri, user=user, ok=True)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            relay(client, upstream, self.watcher())
            return
        scheme, _, remainder = uri.partition("://")
        hostport, slash, path = remainder.partition("/")
        host, _, port = hostport.partition(":")
        kept = [(k, v) for k, v in headers
                if k.strip().lower() not in ("proxy-authorization", "proxy-connection", "connection")]
        request = f"{method} /{path} {version}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in kept)
        request += "Connection: close\r\n\r\n"
        try:
            upstream = socket.create_connection((host, int(port or 80)), timeout=5)
        except OSError:
            self.log(kind="http", target=uri, user=user, ok=False)
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self.log(kind="http", target=uri, user=user, ok=True, method=method)
        upstream.sendall(request.encode("latin-1") + rest)
        relay(client, upstream)

    def authorize(self, headers: dict[str, str]) -> str | None | bool:
        """The proxy user, None without credentials configured, False when refused."""
        if self.user is None:
            return None
        scheme, _, value = headers.get("proxy-authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user if (user, password) == (self.user, self.password) else False


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def relay(a: socket.socket, b: socket.socket, cut: Callable[[bytes], bool] | None = None) -> None:
    """Copy bytes both ways until either side closes (or ``cut`` says to, on what ``a`` sends)."""
    a.settimeout(None)
    b.settimeout(None)

    def pump(src: socket.socket, dst: socket.socket, cut: Callable[[bytes], bool] | None = None) -> None:
        try:
            while chunk := src.recv(65536):
                if cut is not None and cut(chunk):
                    break  # dropped; both sides are closed below
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b, cut)
    other.join(10)
    b.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--cut-on", help="bytes (UTF-8) whose --cut-at-th sending cuts the tunnel")
    parser.add_argument("--cut-at", type=int, default=1)
    args = parser.parse_args()
    cut_on = args.cut_on.encode() if args.cut_on else None
    Proxy(args.port, args.log, args.user, args.password, cut_on, args.cut_at).serve()


if __name__ == "__main__":
    main()
