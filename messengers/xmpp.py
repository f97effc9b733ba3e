"""XMPP (Jabber) chat messages, on slixmpp; one stream per batch.

slixmpp is asyncio based and the delivery engine is synchronous (a Celery
prefork child runs one batch at a time on its main thread). So each batch
gets its own event loop: ``before_send`` creates it and opens one XMPP
session, ``send`` runs the sends on it, ``after_send`` closes the stream, the
loop and its resolver threads. Nothing outlives the batch, and the loop is
never installed as the thread's current loop.

A dispatch is SENT only once the server has taken responsibility for the
stanza: with XEP-0198 (stream management) when the server acknowledges it,
without XEP-0198 when the server answers a ping sent after it on the same
stream (a server handles a stream's stanzas in order). See docs/xmpp.md.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import re
import socket
import ssl
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID, InvalidJID

from .base import MessengerBase
from .exceptions import (
    InvalidAddress,
    MessengerConfigurationError,
    MessengerError,
    PermanentError,
    TemporaryError,
)
from .redact import redact, register_secret

logger = logging.getLogger("messengers.xmpp")


class _SASLRedactingFilter(logging.Filter):
    """slixmpp logs every byte it sends at DEBUG, SASL exchanges included
    (a PLAIN ``<auth>`` is the password in base64): mask them, and any
    registered secret."""

    _SASL = re.compile(r"(<(?:auth|response|challenge|success)\b[^>]*>)[^<]+")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        masked = redact(self._SASL.sub(r"\1***", message))
        if masked != message:
            record.msg, record.args = masked, None
        return True


for _name in ("slixmpp.xmlstream.xmlstream", "slixmpp.features.feature_mechanisms.mechanisms"):
    logging.getLogger(_name).addFilter(_SASLRedactingFilter())

T = TypeVar("T")

#: Proxy setting: a URL, a ``{"xmpp"|"https"|"all": url}`` dict like the HTTP
#: messengers take, or a callable returning either (called once per batch).
ProxySetting = str | Mapping[str, str] | Callable[[], "str | Mapping[str, str] | None"] | None

# Characters XML 1.0 cannot carry; a server closes the whole stream on them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# Error conditions worth a retry even when the server types them "cancel".
_TEMPORARY_CONDITIONS = {
    "internal-server-error",
    "remote-server-timeout",
    "resource-constraint",
    "recipient-unavailable",
}
# Stream errors that a retry of the same configuration will not fix.
# (policy-violation is not one: servers use it for rate limits too.)
_PERMANENT_STREAM_ERRORS = {"host-unknown", "not-authorized", "improper-addressing"}


def parse_jid(address: Any) -> JID:
    """The JID of a recipient address, or :class:`InvalidAddress` saying why.

    A recipient must be an account: ``user@domain`` or ``user@domain/resource``.
    """
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddress(f"xmpp: {address!r} is not a JID (expected user@domain)")
    text = address.strip()
    try:
        jid = JID(text)
    except InvalidJID as exc:
        raise InvalidAddress(f"xmpp: {text!r} is not a valid JID: {exc}") from None
    if not jid.user or not jid.domain:
        raise InvalidAddress(f"xmpp: {text!r} is not a valid JID: expected user@domain")
    return jid


def xmpp_error_to_exception(condition: str, error_type: str, text: str, to: str) -> MessengerError:
    """Map an error stanza bounced for one message to a Temporary/PermanentError.

    RFC 6120 §8.3.2: type ``wait`` means retry later; ``cancel``, ``modify``
    and ``auth`` mean the same stanza will not succeed.
    """
    detail = f"XMPP server refused the message to {to}: {condition or 'error'} ({error_type or 'no type'})"
    if text:
        detail += f": {text}"
    if error_type == "wait" or condition in _TEMPORARY_CONDITIONS:
        return TemporaryError(detail)
    return PermanentError(detail)


# -- proxies ----------------------------------------------------------------------


def select_proxy(proxy: ProxySetting) -> str | None:
    """The proxy URL to use for one batch, from a URL, a dict or a callable."""
    if callable(proxy):
        proxy = proxy()
    if proxy is None or proxy == "":
        return None
    if isinstance(proxy, str):
        return proxy
    if isinstance(proxy, Mapping):
        for key in ("xmpp", "https", "all", "http"):
            if proxy.get(key):
                return proxy[key]
        return None
    raise MessengerConfigurationError(f"xmpp: proxy must be a URL, a dict or a callable, not {proxy!r}")


def _check_proxy_url(url: str) -> None:
    parts = urlsplit(url)
    register_secret(unquote(parts.password or ""))
    if parts.scheme not in ("http", "socks5", "socks5h") or not parts.hostname:
        raise MessengerConfigurationError(
            f"xmpp: unsupported proxy {parts.scheme}://{parts.hostname or ''} "
            "(use http://, socks5:// or socks5h://host:port)"
        )


async def open_tunnel(loop: asyncio.AbstractEventLoop, proxy_url: str, host: str, port: int) -> socket.socket:
    """A connected, non-blocking socket to ``host:port`` through ``proxy_url``.

    HTTP proxies get ``CONNECT``; SOCKS5 proxies a CONNECT request, with
    username/password authentication when the URL has credentials.
    ``socks5h://`` lets the proxy resolve ``host``; ``socks5://`` resolves it
    here. Failures are :class:`TemporaryError`, proxy credentials refused
    included (as for the HTTP messengers: fixing the proxy must not lose
    messages).
    """
    parts = urlsplit(proxy_url)
    scheme = parts.scheme
    phost = parts.hostname or ""
    pport = parts.port or (1080 if scheme.startswith("socks") else 8080)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    where = f"proxy {scheme}://{phost}:{pport}"
    try:
        infos = await loop.getaddrinfo(phost, pport, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TemporaryError(f"{where}: cannot resolve the proxy host: {exc}") from exc
    sock: socket.socket | None = None
    error: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            break
        except OSError as exc:
            sock.close()
            sock, error = None, exc
    if sock is None:
        raise TemporaryError(f"{where}: cannot connect: {error}")
    try:
        if scheme == "http":
            await _http_connect(loop, sock, where, host, port, user, password)
        else:
            await _socks5_connect(
                loop, sock, where, host, port, user, password, remote_dns=scheme == "socks5h"
            )
    except BaseException:
        sock.close()
        raise
    return sock


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int, where: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise TemporaryError(f"{where}: closed the connection during the handshake")
        data += chunk
    return data


async def _http_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, where: str,
                        host: str, port: int, user: str, password: str) -> None:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if user or password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request += f"Proxy-Authorization: Basic {token}\r\n"
    await loop.sock_sendall(sock, (request + "\r\n").encode())
    # The XMPP server says nothing before the client does, so everything read
    # up to the blank line belongs to the proxy's answer.
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise TemporaryError(f"{where}: closed the connection during CONNECT")
        response += chunk
        if len(response) > 65536:
            raise TemporaryError(f"{where}: answer to CONNECT too long")
    status_line = response.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(" ", 2)
    code = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    if code == 407:
        raise TemporaryError(f"{where}: the proxy refused our credentials ({status_line})")
    if not 200 <= code < 300:
        raise TemporaryError(f"{where}: CONNECT {target} refused: {status_line}")


_SOCKS5_REPLIES = {
    1: "general failure", 2: "connection not allowed by ruleset", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired", 7: "command not supported",
    8: "address type not supported",
}


async def _socks5_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, where: str,
                          host: str, port: int, user: str, password: str, remote_dns: bool) -> None:
    methods = b"\x00\x02" if (user or password) else b"\x00"
    await loop.sock_sendall(sock, b"\x05" + bytes([len(methods)]) + methods)
    version, method = await _recv_exactly(loop, sock, 2, where)
    if version != 5:
        raise TemporaryError(f"{where}: not a SOCKS5 proxy")
    if method == 0x02:
        u, p = user.encode(), password.encode()
        await loop.sock_sendall(sock, b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        _, status = await _recv_exactly(loop, sock, 2, where)
        if status != 0:
            raise TemporaryError(f"{where}: the proxy refused our credentials")
    elif method != 0x00:
        raise TemporaryError(f"{where}: no acceptable authentication method (credentials needed?)")

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None and not remote_dns:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise TemporaryError(f"cannot resolve {host}: {exc}") from exc
        ip = ipaddress.ip_address(infos[0][4][0])
    if ip is None:
        name = host.encode("idna")
        address = b"\x03" + bytes([len(name)]) + name
    elif ip.version == 4:
        address = b"\x01" + ip.packed
    else:
        address = b"\x04" + ip.packed
    await loop.sock_sendall(sock, b"\x05\x01\x00" + address + struct.pack(">H", port))
    _, reply, _, atyp = await _recv_exactly(loop, sock, 4, where)
    if atyp == 1:
        await _recv_exactly(loop, sock, 4 + 2, where)
    elif atyp == 4:
        await _recv_exactly(loop, sock, 16 + 2, where)
    elif atyp == 3:
        (length,) = await _recv_exactly(loop, sock, 1, where)
        await _recv_exactly(loop, sock, length + 2, where)
    if reply != 0:
        reason = _SOCKS5_REPLIES.get(reply, f"error {reply}")
        raise TemporaryError(f"{where}: cannot reach {host}:{port}: {reason}")


# -- the slixmpp client ---------------------------------------------------------


class _Client(ClientXMPP):
    """A ClientXMPP that says why a session did not start instead of retrying forever.

    slixmpp's own policy is to reconnect with back-off and to log failures;
    a batch needs one attempt and a classified reason (``failure``).
    """

    def __init__(self, jid: str, password: str, *, loop: asyncio.AbstractEventLoop,
                 ssl_context: ssl.SSLContext | None, mode: str, proxy_url: str | None):
        plugin_config: dict[str, dict[str, Any]] = {}
        if mode == XMPPMessenger.PLAINTEXT:
            # Asked for explicitly: the password may cross the network in the clear.
            plugin_config["feature_mechanisms"] = {"unencrypted_plain": True, "unencrypted_scram": True}
        super().__init__(jid, password, plugin_config=plugin_config, loop=loop, ssl_context=ssl_context)
        self.mode = mode
        self.proxy_url = proxy_url
        self.enable_direct_tls = mode == XMPPMessenger.DIRECT_TLS
        self.enable_starttls = mode == XMPPMessenger.STARTTLS
        self.enable_plaintext = mode == XMPPMessenger.PLAINTEXT
        # aiodns (slixmpp's SRV resolver) leaves native threads behind in the
        # worker; without it the host is resolved with getaddrinfo on the
        # loop's executor, which is shut down with the loop.
        self.use_aiodns = False
        self.whitespace_keepalive = False
        # Acks are requested explicitly after each group of messages.
        self.register_plugin("xep_0198", {"allow_resume": False, "window": 2**30})

        self.failure: MessengerError | None = None
        self.connection_errors: list[str] = []
        self.auth_condition = ""
        self.closed = False
        self.ready = False  # the session is negotiated
        self.acked: set[str] = set()
        self.bounces: dict[str, MessengerError] = {}
        self.changed = asyncio.Event()

        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("ssl_invalid_chain", self._on_invalid_chain)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        self.add_event_handler("no_auth", self._on_no_auth)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stanza_acked", self._on_acked)
        self.add_event_handler("message_error", self._on_message_error)

    # -- state -------------------------------------------------------------------
    def fail(self, error: MessengerError) -> None:
        """Keep the first reason: later ones are consequences of it."""
        if self.failure is None:
            self.failure = error
        self.changed.set()

    @property
    def encrypted(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    @property
    def stream_management(self) -> bool:
        return "stream_management" in self.features

    # -- slixmpp hooks -----------------------------------------------------------
    async def _handle_stream_features(self, features: Any) -> bool | None:
        # slixmpp would carry on to SASL when STARTTLS is missing; with TLS
        # required we stop here, before any credential is sent.
        offered = features["features"]
        if self.mode != XMPPMessenger.PLAINTEXT and not self.encrypted and "starttls" not in offered:
            self.fail(PermanentError(
                f"XMPP server {self.boundjid.domain} does not offer STARTTLS: refusing to log in "
                "without TLS (set plaintext=True only for a local test server)"
            ))
            self.abort()
            return True
        return await super()._handle_stream_features(features)

    async def _attempt_connection(self, host: str, port: int, tls: bool, server_hostname: str | None) -> bool:
        if not self.proxy_url:
            return await super()._attempt_connection(host, port, tls, server_hostname)
        # slixmpp connects with loop.create_connection(host, port); through a
        # proxy the same call takes the tunnelled socket instead.
        self.event_when_connected = "connected"
        if self._current_connection_attempt is None:
            return False
        try:
            sock = await open_tunnel(self.loop, self.proxy_url, host, port)
        except MessengerError as exc:
            self.event("connection_failed", exc)
            return False
        try:
            await self.loop.create_connection(
                lambda: self, sock=sock, ssl=self.get_ssl_context() if tls else None,
                server_hostname=server_hostname if tls else None,
            )
        except OSError as exc:
            sock.close()
            self.event("connection_failed", exc)
            return False
        return True

    # -- events ------------------------------------------------------------------
    def _on_connection_failed(self, error: Any) -> None:
        if isinstance(error, ssl.SSLCertVerificationError):
            self._on_invalid_chain(error)
        if isinstance(error, str) and error.startswith("No DNS record"):
            # slixmpp names the JID's domain; the name looked up is the host.
            host = self.custom_address[0] if self.custom_address else self.boundjid.domain
            error = f"cannot resolve {host} (DNS)"
        self.connection_errors.append(str(error))
        self.changed.set()

    def _on_invalid_chain(self, error: Any) -> None:
        # slixmpp names every failed TLS handshake so; only a certificate that
        # does not verify is for sure permanent.
        domain = self.boundjid.domain
        if isinstance(error, ssl.SSLCertVerificationError):
            self.fail(PermanentError(f"certificate of XMPP server {domain} not trusted: {error}"))
        else:
            self.fail(TemporaryError(f"TLS handshake with XMPP server {domain} failed: {error}"))
        self.abort()

    def _on_failed_auth(self, stanza: Any) -> None:
        self.auth_condition = stanza["condition"] or self.auth_condition

    def _on_failed_all_auth(self, _: Any) -> None:
        reason = self.auth_condition or "no mechanism succeeded"
        self.fail(PermanentError(f"XMPP authentication failed for {self.requested_jid.bare}: {reason}"))

    def _on_no_auth(self, _: Any) -> None:
        mechanisms = ", ".join(sorted(self.plugin["feature_mechanisms"].mech_list)) or "none"
        hint = "" if self.encrypted else " (password mechanisms are refused without TLS)"
        self.fail(PermanentError(
            f"XMPP server {self.boundjid.domain} offers no login mechanism we accept: {mechanisms}{hint}"
        ))

    def _on_stream_error(self, error: Any) -> None:
        condition, text = error["condition"], error["text"]
        detail = f"XMPP stream error from {self.boundjid.domain}: {condition}" + (f": {text}" if text else "")
        self.fail(PermanentError(detail) if condition in _PERMANENT_STREAM_ERRORS else TemporaryError(detail))

    def _on_disconnected(self, _: Any) -> None:
        self.closed = True
        self.changed.set()

    def _on_acked(self, stanza: Any) -> None:
        self.acked.add(stanza["id"])
        self.changed.set()

    def _on_message_error(self, message: Any) -> None:
        error = message["error"]
        bounce = xmpp_error_to_exception(
            error["condition"], error["type"], error["text"], str(message["from"])
        )
        self.bounces[message["id"]] = bounce
        # Attributed to its dispatch if that one is still being confirmed;
        # logged in any case (a late one arrives after its dispatch was marked).
        logger.info("xmpp: message %s bounced: %s", message["id"], bounce)
        self.changed.set()


# -- the messenger --------------------------------------------------------------


class XMPPMessenger(MessengerBase):
    """Sends XMPP chat messages from one account, one session per batch.

    ``XMPPMessenger('bot@example.org', 'password')`` connects to
    ``example.org:5222`` and requires STARTTLS with a certificate valid for
    ``example.org``. ``host``/``port`` point elsewhere (SRV records are not
    looked up); ``direct_tls=True`` speaks TLS from the first byte (port 5223
    by default); ``ca_file`` trusts a private CA; ``verify=False`` encrypts
    without checking the certificate; ``plaintext=True`` never uses TLS and
    is meant for a local test server only. ``proxy`` tunnels the connection
    through an HTTP CONNECT or SOCKS5 proxy.
    """

    alias = "xmpp"
    title = "XMPP"
    allow_user_subscription = True

    STARTTLS = "starttls"
    DIRECT_TLS = "direct_tls"
    PLAINTEXT = "plaintext"

    def __init__(
        self,
        from_jid: str,
        password: str,
        host: str | None = None,
        port: int | None = None,
        *,
        direct_tls: bool = False,
        plaintext: bool = False,
        ca_file: str | None = None,
        verify: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        proxy: ProxySetting = None,
        timeout: float = 30,
        confirm_every: int = 50,
        message_type: str = "chat",
        max_text_length: int | None = 60_000,
    ) -> None:
        try:
            jid = JID(from_jid or "")
        except InvalidJID as exc:
            raise MessengerConfigurationError(
                f"xmpp: from_jid {from_jid!r} is not a valid JID: {exc}"
            ) from None
        if not jid.user or not jid.domain:
            raise MessengerConfigurationError(f"xmpp: from_jid {from_jid!r} must be user@domain")
        if direct_tls and plaintext:
            raise MessengerConfigurationError("xmpp: direct_tls and plaintext are exclusive")
        if message_type not in ("chat", "normal", "headline"):
            raise MessengerConfigurationError(
                f"xmpp: message_type {message_type!r}: use chat, normal or headline"
            )
        if not callable(proxy):
            url = select_proxy(proxy)  # a bad proxy fails now, not at the first batch
            if url:
                _check_proxy_url(url)
        self.from_jid = jid.bare
        self.resource = jid.resource or "dispatcher"
        self.password = password or ""
        register_secret(self.password)
        self.mode = self.DIRECT_TLS if direct_tls else self.PLAINTEXT if plaintext else self.STARTTLS
        self.host = host or jid.domain
        self.port = int(port) if port else (5223 if direct_tls else 5222)
        self.ca_file = ca_file
        self.verify = verify
        self.ssl_context = ssl_context
        self.proxy = proxy
        self.timeout = float(timeout)
        self.confirm_every = max(1, int(confirm_every))
        self.message_type = message_type
        self.max_text_length = max_text_length
        # Per batch, on the copy made by for_batch().
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: _Client | None = None
        self._failure: MessengerError | None = None

    def __repr__(self) -> str:
        return f"<XMPPMessenger {self.from_jid} via {self.host}:{self.port} ({self.mode})>"

    # -- addresses ---------------------------------------------------------------
    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        """A string is the JID itself; any other object (a user) gives its ``jid``
        attribute, or None when it has none (``recipients()`` then refuses it)."""
        if isinstance(recipient, str):
            return recipient
        return getattr(recipient, "jid", None) or None

    def validate_address(self, address: Any) -> str:
        """The normalised JID (``User@Example.ORG`` → ``user@example.org``)."""
        return str(parse_jid(address))

    # -- batch lifecycle ---------------------------------------------------------
    def before_send(self) -> None:
        """Open the batch's event loop and XMPP session.

        Bad credentials, an untrusted certificate or a server without STARTTLS
        raise :class:`PermanentError`; refused connections, DNS failures and
        timeouts :class:`TemporaryError`. The engine marks the whole batch.
        """
        self._shutdown()
        self._failure = None
        self._loop = asyncio.new_event_loop()
        try:
            self._client = self._run(self._open())
        except BaseException:
            self._shutdown()
            raise

    def after_send(self) -> None:
        """Close the stream (waiting briefly for the server's goodbye), then the loop."""
        self._shutdown()

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Sequence[Any]) -> None:
        if self._failure is not None:
            raise self._failure
        if self._loop is None:
            self.before_send()
        items: list[tuple[Any, str, JID, str]] = []
        for dispatch in dispatch_models:
            try:
                to = parse_jid(dispatch.address)
            except InvalidAddress as exc:
                self.mark_failed(dispatch, PermanentError(str(exc)))
                continue
            body = self.body(dispatch)
            if not body:
                self.mark_failed(dispatch, PermanentError("xmpp: the message has no text"))
                continue
            too_long = self._too_long(body)
            if too_long:
                # A stanza over the server's limit closes the whole stream.
                self.mark_failed(dispatch, PermanentError(too_long))
                continue
            items.append((dispatch, self.stanza_id(dispatch), to, body))
        for start in range(0, len(items), self.confirm_every):
            chunk = items[start : start + self.confirm_every]
            confirmed, failure = self._run(self._send_chunk([(sid, to, body) for _, sid, to, body in chunk]))
            # Marked here, outside the event loop: the outcomes go to the
            # database, and Django refuses ORM calls from a running loop.
            for dispatch, sid, _, _ in chunk:
                if sid not in confirmed:
                    continue
                error = confirmed[sid]
                if error is None:
                    self.mark_sent(dispatch)
                else:
                    self.mark_exception(dispatch, error)
            if failure is not None:
                # The stream is gone: what the server did not confirm, here
                # and in the rest of the batch, gets this reason (the engine
                # marks the rest of this message; later sends raise it again).
                self._failure = failure
                raise failure

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def body(dispatch: Any) -> str:
        rendered = dispatch.rendered
        return _XML_INVALID.sub("\ufffd", rendered.text or rendered.subject or "").strip()

    def _too_long(self, body: str) -> str:
        """Why ``body`` is too long to send, or ''. The server's own limit
        (XEP-0478) wins when it advertises one."""
        client = self._client
        server_limit = client.limits.max_bytes if client is not None else None
        if server_limit:
            size = len(body.encode())
            if size + 1024 > server_limit:  # room for the stanza around the text
                return f"xmpp: the text is {size} bytes; the server takes stanzas up to {server_limit} bytes"
        elif self.max_text_length and len(body) > self.max_text_length:
            return (
                f"xmpp: the text is {len(body)} characters, over max_text_length={self.max_text_length} "
                "(raise it if your server accepts larger stanzas)"
            )
        return ""

    @staticmethod
    def stanza_id(dispatch: Any) -> str:
        """Unique per attempt; names the dispatch so a receiver's log can be matched."""
        prefix = f"dispatch-{dispatch.pk}-" if dispatch.pk else "test-"
        return prefix + uuid.uuid4().hex[:12]

    def make_ssl_context(self) -> ssl.SSLContext:
        """A fresh context per connection (slixmpp changes the one it is given)."""
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _run(self, coro: Awaitable[T]) -> T:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    # -- the session ---------------------------------------------------------------
    async def _open(self) -> _Client:
        try:
            proxy_url = select_proxy(self.proxy)
        except Exception as exc:  # a callable's own failure; its text may hold secrets
            raise TemporaryError(f"xmpp: the proxy callable failed: {type(exc).__name__}") from None
        if proxy_url:
            try:
                _check_proxy_url(proxy_url)
            except MessengerConfigurationError as exc:
                raise TemporaryError(str(exc)) from None  # fixing the setting must not lose messages
        assert self._loop is not None
        client = _Client(
            f"{self.from_jid}/{self.resource}-{uuid.uuid4().hex[:8]}",
            self.password,
            loop=self._loop,
            ssl_context=None if self.mode == self.PLAINTEXT else self.make_ssl_context(),
            mode=self.mode,
            proxy_url=proxy_url,
        )
        self._client = client  # so that _shutdown() closes it if we stop half-way
        negotiated = self._loop.create_future()

        def on_negotiated(_: Any) -> None:
            if not negotiated.done():
                negotiated.set_result(True)

        client.add_event_handler("stream_negotiated", on_negotiated)
        where = f"{self.host}:{self.port}" + (" via proxy" if proxy_url else "")
        stage = "connecting"
        try:
            async with asyncio.timeout(self.timeout):
                retry = await client.connect(self.host, self.port)
                if retry is not None:  # every address failed; slixmpp would retry forever
                    client.cancel_connection_attempt()
                    errors = "; ".join(dict.fromkeys(client.connection_errors)) or "unknown error"
                    raise client.failure or TemporaryError(f"cannot connect to XMPP server {where}: {errors}")
                stage = "logging in"
                lost = client.disconnected
                await asyncio.wait({negotiated, lost}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            client.cancel_connection_attempt()
            raise client.failure or TemporaryError(
                f"XMPP server {where}: no session within {self.timeout:g}s ({stage})"
            ) from None
        if not negotiated.done() or client.closed:
            raise client.failure or TemporaryError(
                f"XMPP server {where} closed the stream before the session started"
            )
        if self.mode != self.PLAINTEXT and not client.encrypted:  # never without TLS unless asked
            raise PermanentError(f"XMPP session with {where} is not encrypted")
        client.ready = True
        logger.debug(
            "xmpp: session %s on %s (%s, stream management: %s)",
            client.boundjid, where, self.mode, client.stream_management,
        )
        return client

    async def _send_chunk(
        self, items: list[tuple[str, JID, str]]
    ) -> tuple[dict[str, MessengerError | None], MessengerError | None]:
        """Send, then wait until the server has taken every stanza.

        Returns the confirmed stanza ids (each with the error the server
        bounced it with, if any), and the reason the rest were not confirmed.
        """
        client = self._client
        assert client is not None
        if client.closed or client.failure:
            return {}, client.failure or TemporaryError("xmpp: the XMPP stream was closed during the batch")
        for sid, to, body in items:
            message = client.make_message(mto=to, mbody=body, mtype=self.message_type)  # type: ignore[arg-type]
            message["id"] = sid
            message.send()
        ids = [sid for sid, _, _ in items]
        failure: MessengerError | None = None
        try:
            async with asyncio.timeout(self.timeout):
                if client.stream_management:
                    # Every queued stanza written (and counted by XEP-0198) before asking.
                    await self._wait_or_lost(client, asyncio.ensure_future(client.waiting_queue.join()))
                    client.plugin["xep_0198"].request_ack()
                    await self._until(client, lambda: all(sid in client.acked for sid in ids))
                else:
                    await self._ping(client)
        except TimeoutError:
            failure = TemporaryError(
                f"xmpp: the server did not confirm the messages within {self.timeout:g}s"
            )
            client.fail(failure)
            client.abort()
        except MessengerError as exc:
            failure = exc
        if failure is None:
            return {sid: client.bounces.get(sid) for sid in ids}, None
        # Acknowledged before the stream was lost: those were sent all the same.
        return {sid: client.bounces.get(sid) for sid in ids if sid in client.acked}, failure

    @staticmethod
    async def _until(client: _Client, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()``; raise if the stream closes first."""
        while not predicate():
            if client.closed or client.failure:
                raise client.failure or TemporaryError(
                    "xmpp: the XMPP stream closed before the server confirmed the messages"
                )
            client.changed.clear()
            await client.changed.wait()

    @staticmethod
    async def _wait_or_lost(client: _Client, awaitable: asyncio.Future[T]) -> T:
        """``awaitable``'s result, unless the stream closes first."""
        lost = client.disconnected
        if not client.closed:
            await asyncio.wait({awaitable, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not awaitable.done():
            awaitable.cancel()
            raise client.failure or TemporaryError(
                "xmpp: the XMPP stream closed before the server confirmed the messages"
            )
        return awaitable.result()

    async def _ping(self, client: _Client) -> None:
        """Without XEP-0198: a ping answered means every earlier stanza was handled."""
        iq = client.Iq(stype="get", sto=client.boundjid.domain)
        iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
        try:
            await self._wait_or_lost(client, iq.send(timeout=self.timeout))
        except IqError:
            pass  # an error reply is a reply: the stanzas before it were handled
        except IqTimeout:
            raise TemporaryError("xmpp: the server did not answer the ping after the messages") from None

    # -- closing -------------------------------------------------------------------
    def _shutdown(self) -> None:
        loop, client = self._loop, self._client
        self._loop = self._client = None
        if loop is None or loop.is_closed():
            return
        try:
            if client is not None:
                try:
                    loop.run_until_complete(asyncio.wait_for(self._disconnect(client), min(self.timeout, 5)))
                except Exception as exc:  # a failed goodbye is not a failed send
                    logger.debug("xmpp: disconnect: %r", exc)
                    client.abort()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    @staticmethod
    async def _disconnect(client: _Client) -> None:
        client.cancel_connection_attempt()
        if client.transport is not None and client.ready and not client.failure:
            await client.disconnect(wait=2)  # close the stream; the server answers in kind
        if client.transport is not None:
            client.abort()
        for _ in range(3):  # let connection_lost() run
            await asyncio.sleep(0)
