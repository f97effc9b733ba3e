"""A real Prosody XMPP server for the tests, and a recipient client.

``ProsodyServer`` writes a temporary config (its own data directory, free
loopback ports, pidfile, log file, ``run_as_root`` since the tests may run as
root), optionally a self-signed certificate for its domain, starts
``prosody -F`` and creates accounts with ``prosodyctl register``.
``Listener`` is a second slixmpp client, logged in as a recipient in a
thread of its own, that keeps every message it receives. Proxies come from
the suite's one fake proxy (``tests.fakes.processes.ProxyProcess``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.services import free_ports, wait_for

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")
OPENSSL = shutil.which("openssl")


def missing() -> str | None:
    """Why a Prosody server cannot be started here, or None."""
    if not (PROSODY and PROSODYCTL):
        return "Prosody is not installed (Debian: apt-get install prosody; .ci/run installs it)"
    if not OPENSSL:
        return "openssl is not installed (needed for the test server's certificate)"
    return None


def make_certificate(directory: Path, domain: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``domain`` (it is also the CA file clients trust)."""
    cert, key = directory / f"{domain}.crt", directory / f"{domain}.key"
    subprocess.run(
        [OPENSSL or "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={domain}",
         "-addext", f"subjectAltName=DNS:{domain}"],
        check=True, capture_output=True,
    )
    return cert, key


CONFIG = """\
-- Written by tests/fakes/prosody.py; a throw-away server on loopback.
pidfile = "{root}/prosody.pid"
data_path = "{root}/data"
run_as_root = true
log = {{ info = "{root}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ {direct_tls_ports} }}
s2s_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "posix"{tls}{smacks} }}
-- No s2s (no port 5269); no offline storage: a message to a user who is not
-- online bounces, so "received" in a test means received now.
modules_disabled = {{ "s2s", "offline" }}
-- Plaintext logins are allowed so that a plaintext client can be tested;
-- clients that require TLS still get STARTTLS when a certificate is set.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
certificates = "{root}/certs"
VirtualHost "{domain}"
"""


@dataclass
class Account:
    jid: str
    password: str


class ProsodyServer:
    """A real Prosody on loopback. ``tls``: a self-signed certificate (STARTTLS
    and direct TLS offered); ``stream_management``: XEP-0198 (mod_smacks)."""

    def __init__(self, root: Path, domain: str = "dispatcher.test", tls: bool = True,
                 stream_management: bool = True):
        self.root = root
        self.domain = domain
        self.tls = tls
        self.stream_management = stream_management
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "certs").mkdir(exist_ok=True)
        self.ca_file: Path | None = make_certificate(root / "certs", domain)[0] if tls else None
        self.config = root / "prosody.cfg.lua"
        self.log_path = root / "prosody.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.direct_tls_port = 0
        for attempt in range(3):  # a free port may be taken between choosing and binding it
            self.port, self.direct_tls_port = free_ports(2)
            self._write_config()
            try:
                self._start()
                break
            except AssertionError:
                self.stop()
                if attempt == 2:
                    raise

    def _write_config(self) -> None:
        self.config.write_text(CONFIG.format(
            root=self.root, domain=self.domain, c2s_port=self.port,
            direct_tls_ports=self.direct_tls_port if self.tls else "",
            tls=', "tls"' if self.tls else "",
            smacks=', "smacks"' if self.stream_management else "",
        ))

    def _start(self) -> None:
        self.output = open(self.root / "stdout.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PROSODY or "prosody", "--config", str(self.config), "-F"],
            stdout=self.output, stderr=subprocess.STDOUT, start_new_session=True,
        )
        ports = [self.port] + ([self.direct_tls_port] if self.tls else [])
        wait_for(lambda: self._listening(ports), 30, 0.05, f"prosody to listen (log: {self.log_path})")

    def _listening(self, ports: list[int]) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prosody exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
        for port in ports:
            try:
                sock = socket.create_connection(("127.0.0.1", port), 1)
            except OSError:
                return False
            with sock:
                if port == self.direct_tls_port:
                    self._check_tls(sock)
        return True

    def _check_tls(self, sock: socket.socket) -> None:
        """The direct-TLS port must be Prosody's: a port taken by another
        server between choosing and binding it would answer in plaintext."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            context.wrap_socket(sock, server_hostname=self.domain).close()
        except (ssl.SSLError, OSError) as exc:
            raise AssertionError(f"port {self.direct_tls_port} does not speak TLS: {exc}") from exc

    def logs(self) -> str:
        text = ""
        for path in (self.root / "stdout.log", self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def register(self, user: str | None = None, password: str | None = None) -> Account:
        """Create an account (a fresh name by default, so tests never share a mailbox)."""
        user = user or f"u{uuid.uuid4().hex[:10]}"
        password = password or uuid.uuid4().hex
        subprocess.run(
            [PROSODYCTL or "prosodyctl", "--config", str(self.config),
             "register", user, self.domain, password],
            check=True, capture_output=True, timeout=30,
        )
        return Account(f"{user}@{self.domain}", password)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if getattr(self, "output", None):
            self.output.close()


@dataclass
class Received:
    sender: str  # full JID: the session the message came from
    body: str
    id: str


class Listener:
    """A recipient logged in with slixmpp in its own thread; keeps what it receives.

    It sends available presence and waits for the server to answer a ping
    before it reports ready, so messages sent afterwards reach this session.
    """

    def __init__(self, server: ProsodyServer, account: Account):
        from slixmpp import ClientXMPP

        self.account = account
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.client: Any = None
        self._client_cls = ClientXMPP
        self.server = server
        self.thread = threading.Thread(target=self._run, name=f"listener-{account.jid}", daemon=True)
        self.thread.start()
        wait_for(self._started, 30, 0.05, f"listener {account.jid} to log in")

    def _started(self) -> bool:
        if self._error is not None:
            raise AssertionError(f"listener {self.account.jid} failed: {self._error!r}")
        return self._ready.is_set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._login())
        except BaseException as exc:  # reported by _started
            self._error = exc
            return
        self.loop.run_forever()

    async def _login(self) -> None:
        from slixmpp.jid import JID

        client = self._client_cls(self.account.jid + "/listener", self.account.password,
                                  plugin_config={"feature_mechanisms": {"unencrypted_plain": True}},
                                  loop=self.loop)
        client.enable_direct_tls = False
        client.enable_starttls = False  # loopback; the messenger under test does the TLS
        client.enable_plaintext = True
        client.use_aiodns = False
        client.register_plugin("xep_0199")
        client.add_event_handler("message", self._on_message)
        self.client = client
        started = asyncio.Event()
        client.add_event_handler("session_start", lambda _: started.set())
        await client.connect("127.0.0.1", self.server.port)
        await asyncio.wait_for(started.wait(), 20)
        client.send_presence()
        await client.plugin["xep_0199"].send_ping(JID(self.server.domain), timeout=20)
        self._ready.set()

    def _on_message(self, message: Any) -> None:
        if message["type"] in ("chat", "normal", "headline") and message["body"]:
            with self._lock:
                self.messages.append(Received(str(message["from"]), message["body"], message["id"]))

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def bodies(self) -> list[str]:
        return [m.body for m in self.received()]

    def stop(self) -> None:
        async def bye() -> None:
            if self.client is not None and self.client.transport is not None:
                await asyncio.wait_for(self.client.disconnect(wait=2), 5)

        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(bye(), self.loop).result(10)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        _close_loop(self.loop)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close a loop its thread has stopped, cancelling what still runs on it."""
    if loop.is_running() or loop.is_closed():
        return
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
