"""The fake proxy as a separate process, and TLS material for HTTPS fakes."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import trustme

from tests.services import BASE, free_port


class ProxyProcess:
    """``python -m tests.fakes.proxy`` on a free loopback port; ``seen()`` is what it handled."""

    def __init__(self, log_dir: Path, user: str | None = None, password: str | None = None,
                 cut_on: bytes | None = None, cut_at: int = 1):
        self.port = free_port()
        self.user, self.password = user, password
        self.log_path = log_dir / f"proxy-{self.port}.jsonl"
        self.log_path.write_text("")
        cmd = [sys.executable, "-m", "tests.fakes.proxy", "--port", str(self.port),
               "--log", str(self.log_path)]
        if user is not None:
            cmd += ["--user", user, "--password", password or ""]
        if cut_on:
            cmd += ["--cut-on", cut_on.decode(), "--cut-at", str(cut_at)]
        self.proc = subprocess.Popen(cmd, cwd=BASE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the proxy listens (or dies)
        if line.strip() != "ready":
            self.stop()
            raise AssertionError(f"the proxy did not start: {line!r}")

    def url(self, scheme: str = "http", credentials: tuple[str, str] | None = None) -> str:
        creds = credentials or ((self.user, self.password or "") if self.user is not None else None)
        auth = f"{creds[0]}:{creds[1]}@" if creds else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def seen(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    @property
    def targets(self) -> list[tuple[str, int]]:
        """Where tunnels (CONNECT, SOCKS5) were opened to, in order."""
        found = []
        for entry in self.seen():
            if entry["kind"] in ("connect", "socks5") and entry["ok"]:
                host, _, port = entry["target"].rpartition(":")
                found.append((host.strip("[]"), int(port)))
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@cache
def _authority() -> trustme.CA:
    return trustme.CA()


def server_tls() -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1, signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _authority().issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def ca_bundle(directory: Path) -> str:
    """The test CA as a PEM file, for ``verify=``."""
    path = directory / "test-ca.pem"
    _authority().cert_pem.write_to_path(str(path))
    return str(path)
