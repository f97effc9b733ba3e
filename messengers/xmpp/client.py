"""The slixmpp stream of one batch, made to report instead of retrying.

slixmpp's own policy suits a chat client: reconnect with back-off, log what
went wrong, carry on without STARTTLS when the server does not offer it. A
batch needs one attempt, TLS unless plaintext was asked for, and a
classified reason (``failure``) it can record on its dispatches.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any

from slixmpp import ClientXMPP

from ..exceptions import MessengerError, PermanentError, TemporaryError
from ..proxy import open_tunnel
from ..redact import redact_loggers
from .connection import DIRECT_TLS, PLAINTEXT, STARTTLS, Connection
from .errors import stream_error_to_exception, xmpp_error_to_exception

logger = logging.getLogger("messengers.xmpp")

# slixmpp logs every byte it sends at DEBUG, SASL exchanges included (a
# PLAIN <auth> is the password in base64): their payloads are masked, as is
# any registered secret.
SASL_PAYLOAD = re.compile(r"(<(?:auth|response|challenge|success)\b[^>]*>)[^<]+")
redact_loggers(
    "slixmpp.xmlstream.xmlstream",
    "slixmpp.features.feature_mechanisms.mechanisms",
    patterns=(SASL_PAYLOAD,),
)


class Client(ClientXMPP):
    """A ClientXMPP that says why a session did not start instead of retrying forever."""

    def __init__(self, jid: str, password: str, *, loop: asyncio.AbstractEventLoop,
                 connection: Connection):
        plugin_config: dict[str, dict[str, Any]] = {}
        if connection.mode == PLAINTEXT:
            # Asked for explicitly: the password may cross the network in the clear.
            plugin_config["feature_mechanisms"] = {"unencrypted_plain": True, "unencrypted_scram": True}
        super().__init__(jid, password, plugin_config=plugin_config, loop=loop,
                         ssl_context=connection.ssl_context)
        self.mode = connection.mode
        self.proxy_url = connection.proxy_url
        self.enable_direct_tls = connection.mode == DIRECT_TLS
        self.enable_starttls = connection.mode == STARTTLS
        self.enable_plaintext = connection.mode == PLAINTEXT
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
        if self.mode != PLAINTEXT and not self.encrypted and "starttls" not in offered:
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
            sock = await open_tunnel(self.proxy_url, host, port)
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
        self.fail(stream_error_to_exception(error["condition"], error["text"], self.boundjid.domain))

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
