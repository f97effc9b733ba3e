"""The XMPP messenger: the messenger contract on top of one session per batch.

It validates its options and addresses, and turns a batch of envelopes into
groups of stanzas whose confirmed outcomes it reports. How a session logs
in and confirms lives in :mod:`.session`; what an error means in :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from slixmpp.jid import JID

from ..base import Envelope, MessageInfo, MessengerBase
from ..exceptions import InvalidAddress, MessengerConfigurationError, MessengerError, PermanentError
from ..proxy import ProxySpec
from . import connection
from .addresses import parse_jid, sender_jid
from .client import Client
from .session import close_session, send_and_confirm, start_session

T = TypeVar("T")

# Characters XML 1.0 cannot carry; a server closes the whole stream on them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


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
    secret_options = ("password",)

    STARTTLS = connection.STARTTLS
    DIRECT_TLS = connection.DIRECT_TLS
    PLAINTEXT = connection.PLAINTEXT

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
        proxy: ProxySpec = None,
        timeout: float = 30,
        confirm_every: int = 50,
        message_type: str = "chat",
        max_text_length: int | None = 60_000,
    ) -> None:
        jid = sender_jid(from_jid)
        mode = connection.connection_mode(direct_tls, plaintext)
        if message_type not in ("chat", "normal", "headline"):
            raise MessengerConfigurationError(
                f"xmpp: message_type {message_type!r}: use chat, normal or headline"
            )
        connection.check_proxy(proxy)
        self.from_jid = jid.bare
        self.resource = jid.resource or "dispatcher"
        self.password = password or ""
        self.mode = mode
        self.host = host or jid.domain
        self.port = int(port) if port else connection.default_port(mode)
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
        self._client: Client | None = None
        self._failure: MessengerError | None = None

    def __repr__(self) -> str:
        return f"<XMPPMessenger {self.from_jid} via {self.host}:{self.port} ({self.mode})>"

    # -- addresses ---------------------------------------------------------------
    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        """A string is the JID itself; any other object (a user) gives its ``jid``
        attribute (or ``jabber``, django-sitemessage's name), or None when it
        has neither (``recipients()`` then refuses it)."""
        if isinstance(recipient, str):
            return recipient
        return getattr(recipient, "jid", None) or getattr(recipient, "jabber", None) or None

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

    def send(self, message_cls: Any, message_model: MessageInfo, dispatch_models: Sequence[Envelope]) -> None:
        if self._failure is not None:
            raise self._failure
        if self._loop is None:
            self.before_send()
        items: list[tuple[Envelope, str, JID, str]] = []
        for envelope in dispatch_models:
            try:
                to = parse_jid(envelope.address)
            except InvalidAddress as exc:
                self.mark_failed(envelope, PermanentError(str(exc)))
                continue
            body = self.body(envelope)
            if not body:
                self.mark_failed(envelope, PermanentError("xmpp: the message has no text"))
                continue
            too_long = self._too_long(body)
            if too_long:
                # A stanza over the server's limit closes the whole stream.
                self.mark_failed(envelope, PermanentError(too_long))
                continue
            items.append((envelope, self.stanza_id(envelope), to, body))
        for start in range(0, len(items), self.confirm_every):
            chunk = items[start : start + self.confirm_every]
            assert self._client is not None
            confirmed, failure = self._run(send_and_confirm(
                self._client, [(sid, to, body) for _, sid, to, body in chunk], self.message_type, self.timeout
            ))
            # Marked here, outside the event loop: the outcomes go to the
            # database, and Django refuses ORM calls from a running loop.
            for envelope, sid, _, _ in chunk:
                if sid not in confirmed:
                    continue
                error = confirmed[sid]
                if error is None:
                    self.mark_sent(envelope)
                else:
                    self.mark_exception(envelope, error)
            if failure is not None:
                # The stream is gone: what the server did not confirm, here
                # and in the rest of the batch, gets this reason (the engine
                # marks the rest of this message; later sends raise it again).
                self._failure = failure
                raise failure

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def body(envelope: Envelope) -> str:
        rendered = envelope.rendered
        return _XML_INVALID.sub("\ufffd", rendered.text or rendered.subject or "").strip()

    def length_problem(self, text: str) -> str | None:
        """The engine's check of each rendered text, in XMPP's terms: the
        server's own stanza limit, once the session knows it, else ``max_text_length``."""
        return self._too_long(text) or None

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
    def stanza_id(envelope: Envelope) -> str:
        """Unique per attempt; names the dispatch so a receiver's log can be matched."""
        prefix = f"dispatch-{envelope.id}-" if envelope.id else "test-"
        return prefix + uuid.uuid4().hex[:12]

    def make_ssl_context(self) -> ssl.SSLContext:
        """A fresh context per connection (slixmpp changes the one it is given)."""
        if self.ssl_context is not None:
            return self.ssl_context
        return connection.make_ssl_context(self.ca_file, self.verify)

    def _run(self, coro: Awaitable[T]) -> T:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    # -- the session ---------------------------------------------------------------
    def _connection(self) -> connection.Connection:
        """This batch's settings, read now: a rotating proxy is asked once per batch."""
        return connection.Connection(
            host=self.host,
            port=self.port,
            mode=self.mode,
            ssl_context=None if self.mode == self.PLAINTEXT else self.make_ssl_context(),
            proxy_url=connection.batch_proxy_url(self.proxy),
            timeout=self.timeout,
        )

    async def _open(self) -> Client:
        settings = self._connection()
        assert self._loop is not None
        client = Client(
            f"{self.from_jid}/{self.resource}-{uuid.uuid4().hex[:8]}",
            self.password,
            loop=self._loop,
            connection=settings,
        )
        self._client = client  # so that _shutdown() closes it if we stop half-way
        await start_session(client, settings)
        return client

    def _shutdown(self) -> None:
        loop, client = self._loop, self._client
        self._loop = self._client = None
        if loop is not None:
            close_session(loop, client, self.timeout)
