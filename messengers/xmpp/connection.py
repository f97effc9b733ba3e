"""Where a batch connects and how: host and port, TLS mode and context, proxy.

The messenger's options are read once per batch into a :class:`Connection`,
so that the client and the session get settled values and a rotating proxy
is asked once per batch.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from ..exceptions import MessengerConfigurationError, TemporaryError
from ..proxy import TUNNEL_KEYS, ProxySpec, ProxyValue, tunnel_url

STARTTLS = "starttls"
DIRECT_TLS = "direct_tls"
PLAINTEXT = "plaintext"

#: A proxies dict is read for ``xmpp`` first, then the keys every tunnel reads.
PROXY_KEYS = ("xmpp", *TUNNEL_KEYS)


def connection_mode(direct_tls: bool, plaintext: bool) -> str:
    """STARTTLS unless asked otherwise: TLS is never silently left out."""
    if direct_tls and plaintext:
        raise MessengerConfigurationError("xmpp: direct_tls and plaintext are exclusive")
    return DIRECT_TLS if direct_tls else PLAINTEXT if plaintext else STARTTLS


def default_port(mode: str) -> int:
    """5223 for direct TLS (XEP-0368), 5222 otherwise (RFC 6120)."""
    return 5223 if mode == DIRECT_TLS else 5222


def make_ssl_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """A fresh context per connection (slixmpp changes the one it is given)."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_proxy(proxy: ProxySpec) -> None:
    """Fail on a bad proxy setting when the messenger is configured, not at its first batch."""
    if callable(proxy):
        return
    try:
        tunnel_url(proxy, PROXY_KEYS)
    except MessengerConfigurationError as exc:
        raise MessengerConfigurationError(f"xmpp: {exc}") from None


def batch_proxy_url(proxy: ProxySpec) -> str | None:
    """The proxy URL of one batch (a callable is called here, once).

    Every failure is temporary: fixing the setting must not lose messages.
    """
    value: ProxyValue
    if callable(proxy):
        try:
            value = proxy()
        except Exception as exc:  # a callable's own failure; its text may hold secrets
            raise TemporaryError(f"xmpp: the proxy callable failed: {type(exc).__name__}") from None
    else:
        value = proxy
    try:
        return tunnel_url(value, PROXY_KEYS)
    except MessengerConfigurationError as exc:
        raise TemporaryError(f"xmpp: {exc}") from None


@dataclass(frozen=True)
class Connection:
    """One batch's settled connection settings."""

    host: str
    port: int
    mode: str
    ssl_context: ssl.SSLContext | None
    proxy_url: str | None
    timeout: float

    @property
    def where(self) -> str:
        """The server as error texts name it (never the proxy's credentials)."""
        return f"{self.host}:{self.port}" + (" via proxy" if self.proxy_url else "")
