"""A small forwarding proxy, run as its own process: HTTP and SOCKS5 on one port.

``python -m tests.fakes.proxy --port 8899 --log seen.jsonl [--user U --password P]``

- HTTP: absolute-URI requests (``GET http://host/path``) are forwarded, and
  ``CONNECT host:port`` opens a tunnel (for HTTPS targets); with credentials,
  ``Proxy-Authorization: Basic`` is required (407 otherwise).
- SOCKS5 (RFC 1928), told apart by its first byte: CONNECT only, with
  username/password authentication (RFC 1929) when credentials are set.

Each request it handles is appended to the log as one JSON line
(``{"kind": "http"|"connect"|"socks5", "target": "host:port", "user": ..., "ok": ...}``),
so a test can prove its request went through the proxy.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import struct
import threading
from typing import Any


class Proxy:
    def __init__(self, port: int, log_path: str, user: str | None, password: str | None):
        self.port, self.log_path, self.user, self.password = port, log_path, user, password
        self.lock = threading.Lock()

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
        relay(client, upstream)

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
            relay(client, upstream)
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


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    a.settimeout(None)
    b.settimeout(None)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
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
    pump(a, b)
    other.join(10)
    b.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    Proxy(args.port, args.log, args.user, args.password).serve()


if __name__ == "__main__":
    main()
