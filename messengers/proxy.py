"""Proxies for every messenger: one way to configure them, one way to name them.

The HTTP messengers hand requests a ``proxies`` dict (PySocks does SOCKS for
``requests``); stream transports such as XMPP cannot, since their client
libraries open the TCP connection themselves, so :func:`open_tunnel` opens it
through the proxy and hands over the connected socket. Both read the same
settings, register proxy passwords as secrets, and name a proxy in error
texts without its credentials.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias
from urllib.parse import SplitResult, unquote, urlsplit

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio import Proxy

from .exceptions import MessengerConfigurationError, TemporaryError
from .redact import redact, register_secret

ProxyValue: TypeAlias = Mapping[str, str] | str | None
ProxySpec: TypeAlias = ProxyValue | Callable[[], ProxyValue]

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")

#: What :func:`open_tunnel` speaks: CONNECT to an HTTP proxy, SOCKS5 (``socks5h``:
#: the proxy resolves the destination). Not TLS to the proxy (``https://``).
TUNNEL_SCHEMES = ("http", "socks5", "socks5h")

#: Keys of a proxies dict a tunnel looks at, in order, when the transport has no key of its own.
TUNNEL_KEYS = ("https", "all", "http")

_DEFAULT_PORTS = {"http": 8080, "socks5": 1080, "socks5h": 1080}


def normalize_proxies(proxy: ProxyValue) -> dict[str, str] | None:
    """requests' ``proxies`` dict from a dict or one URL; registers proxy passwords as secrets."""
    if proxy is None or proxy == "" or proxy == {}:
        return None
    if isinstance(proxy, str):
        proxy = {"http": proxy, "https": proxy}
    if not isinstance(proxy, Mapping):
        raise MessengerConfigurationError(
            f"proxy must be a dict, a URL or a callable returning one, not {type(proxy).__name__}"
        )
    result: dict[str, str] = {}
    for key, url in proxy.items():
        if not url:
            continue
        scheme = str(url).partition("://")[0].lower()
        if "://" not in str(url) or scheme not in PROXY_SCHEMES:
            raise MessengerConfigurationError(
                f"proxy for {key!r} must be a URL with one of the schemes {', '.join(PROXY_SCHEMES)}"
            )
        netloc = str(url).partition("://")[2].split("/", 1)[0]
        if "@" in netloc:
            password = netloc.rpartition("@")[0].partition(":")[2]
            register_secret(password, unquote(password))
        result[str(key)] = str(url)
    return result or None


def describe_proxies(proxies: Mapping[str, str] | None) -> str:
    """Proxy URLs without their credentials, for error texts."""
    if not proxies:
        return ""
    shown = sorted({re.sub(r"://[^@/]*@", "://", url) for url in proxies.values()})
    return ", ".join(shown)


# -- tunnels for stream transports ----------------------------------------------------


def tunnel_url(proxy: ProxyValue, keys: Sequence[str] = TUNNEL_KEYS) -> str | None:
    """The one proxy URL a stream connection goes through, or None.

    A stream has one destination, so a dict is looked up by ``keys`` in order
    (a transport puts its own key first, e.g. ``("xmpp", *TUNNEL_KEYS)``).
    The URL is checked here, so that a bad setting fails when the messenger
    is configured rather than at its first batch.
    """
    if proxy is None or isinstance(proxy, str):
        url = proxy
    elif isinstance(proxy, Mapping):
        url = next((proxy[key] for key in keys if proxy.get(key)), None)
    else:
        raise MessengerConfigurationError(
            f"proxy must be a URL, a dict or a callable returning one, not {type(proxy).__name__}"
        )
    if not url:
        return None
    parts = _split(url)
    if parts.scheme not in TUNNEL_SCHEMES or not parts.hostname:
        raise MessengerConfigurationError(
            f"unsupported proxy {parts.scheme}://{parts.hostname or ''} "
            "(use http://, socks5:// or socks5h://host:port)"
        )
    return url


def _split(url: str) -> SplitResult:
    parts = urlsplit(url)
    # Registered before anything can fail, so no error text below can show it.
    register_secret(parts.password, unquote(parts.password or ""))
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise MessengerConfigurationError(
            f"proxy {parts.scheme}://{parts.hostname or ''}: the port is not a number"
        ) from None
    return parts


def describe_tunnel(url: str) -> str:
    """``proxy scheme://host:port``: the proxy as error texts name it."""
    parts = urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    return f"proxy {parts.scheme}://{parts.hostname or ''}:{port}"


async def open_tunnel(url: str, host: str, port: int, *, timeout: float | None = None) -> socket.socket:
    """A connected, non-blocking socket to ``host:port`` through the proxy ``url``.

    For a client library that makes its own connection (``loop.create_connection(sock=...)``
    takes this socket instead). ``socks5://`` resolves ``host`` here,
    ``socks5h://`` lets the proxy resolve it. Every failure is a
    :class:`TemporaryError` naming the proxy without its credentials, refused
    credentials included: as for the HTTP messengers, fixing the proxy must
    not lose messages.
    """
    parts = _split(url)
    where = describe_tunnel(url)
    if parts.scheme not in TUNNEL_SCHEMES or not parts.hostname:
        raise TemporaryError(f"{where}: unsupported proxy (use http://, socks5:// or socks5h://host:port)")
    kind = ProxyType.HTTP if parts.scheme == "http" else ProxyType.SOCKS5
    proxy = Proxy(
        kind,
        parts.hostname,
        parts.port or _DEFAULT_PORTS[parts.scheme],
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        rdns=parts.scheme == "socks5h",
        loop=asyncio.get_running_loop(),
    )
    try:
        return await proxy.connect(host, port, timeout=timeout)
    except ProxyTimeoutError:
        raise TemporaryError(f"{where}: no answer from the proxy within {timeout or 60:g}s") from None
    except ProxyConnectionError as exc:
        cause = exc.__cause__
        if isinstance(cause, socket.gaierror):
            raise TemporaryError(f"{where}: cannot resolve the proxy host: {cause}") from None
        raise TemporaryError(redact(f"{where}: cannot connect: {cause or exc}")) from None
    except ProxyError as exc:
        raise TemporaryError(redact(f"{where}: {_refusal(kind, exc, host, port)}")) from None
    except socket.gaierror as exc:  # resolving the destination for socks5://
        raise TemporaryError(f"{where}: cannot resolve {host}: {exc}") from None
    except OSError as exc:
        raise TemporaryError(redact(f"{where}: connection lost during the handshake: {exc}")) from None
    except Exception as exc:  # e.g. credentials a SOCKS proxy cannot carry; the text may hold them
        raise TemporaryError(f"{where}: {type(exc).__name__} during the proxy handshake") from None


def _refusal(kind: ProxyType, exc: ProxyError, host: str, port: int) -> str:
    """Why the proxy would not open the tunnel, in the words the HTTP messengers use."""
    text = str(exc)
    code = exc.error_code
    if kind == ProxyType.HTTP:
        if code == 407:
            return f"the proxy refused our credentials ({text})"
        if code is not None:
            return f"CONNECT {host}:{port} refused: {text}"
        return f"no valid answer to CONNECT: {text}"
    if code is not None:
        return f"cannot reach {host}:{port}: {text}"
    if "no acceptable authentication" in text.lower():
        return "no acceptable authentication method (credentials needed?)"
    if "authentication failure" in text.lower():
        return "the proxy refused our credentials"
    return f"SOCKS5 handshake failed: {text}"


def is_proxy_spec(value: object) -> bool:
    """Whether a value given in another argument's place is a proxy setting: a
    dict, a callable or a URL (``scheme://``). django-sitemessage's
    ``FacebookMessenger(token, proxy)`` and ``VKontakteMessenger(token, proxy)``
    take the proxy second, where ours take a page or owner id."""
    return isinstance(value, Mapping) or callable(value) or (isinstance(value, str) and "://" in value)


def take_positional_proxy(messenger: str, value: object, options: dict) -> bool:
    """Move a proxy given positionally into ``options["proxy"]``; True if it was one."""
    if not is_proxy_spec(value):
        return False
    if options.get("proxy") not in (None, "", {}):
        raise MessengerConfigurationError(f"{messenger}: a proxy given twice (second argument and proxy=)")
    options["proxy"] = value
    return True
